"""Runs an evaluation set against this gateway's own retrieval and answer router, and stores the run."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..clients.inference import InferenceClient
from ..repositories import documents as documents_repo
from ..repositories import eval_runs as eval_runs_repo
from .answer import AnswerService
from .eval_set import EvalQuestion, set_digest
from .evaluation import (
    Candidate,
    QuestionResult,
    check_documents,
    result_row,
    run_answers,
    run_retrieval_only,
    summarize,
)
from .retrieval import Arms, retrieve


@dataclass(frozen=True)
class EvalOptions:
    label: str
    retrieval_only: bool
    arms: Arms
    k: int
    top_n: int
    lam: float
    duplicate_similarity: float
    tau: float
    max_query_chars: int
    settings: dict[str, Any]  # what else the run should record (the answer path's settings)


@dataclass
class EvalProgress:
    result: QuestionResult
    total: int


@dataclass
class EvalDone:
    run: dict[str, Any]


class EvalRunner:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], inference: InferenceClient,
                 answers: AnswerService) -> None:
        self.sessions = sessions
        self.inference = inference
        self.answers = answers

    async def run(self, tenant_id: str, questions: Sequence[EvalQuestion],
                  options: EvalOptions) -> AsyncIterator[EvalProgress | EvalDone]:
        """One EvalProgress per question, then EvalDone with the stored run (figures, outcomes, settings)."""
        async with self.sessions() as session:
            ids_to_names = await documents_repo.source_names(session, tenant_id)
        check_documents(questions, set(ids_to_names.values()))
        names = {str(k): v for k, v in ids_to_names.items()}
        started = time.perf_counter()
        run_id = uuid.uuid4().hex[:12]
        mode = "retrieval" if options.retrieval_only else "answer"
        if options.retrieval_only:
            results = run_retrieval_only(questions, lambda q: self._retrieve(tenant_id, q, options))
        else:
            results = run_answers(questions, self.answers.run, tenant_id=tenant_id, tau=options.tau, names=names,
                                  run_id=run_id)
        collected: list[QuestionResult] = []
        async for result in results:
            collected.append(result)
            yield EvalProgress(result, len(questions))
        duration = time.perf_counter() - started
        figures = summarize(questions, collected, mode)
        settings = {**options.settings, "arms": {"vector": options.arms.vector, "text": options.arms.text,
                                                 "rrf_k": options.arms.rrf_k},
                    "k": options.k, "top_n": options.top_n, "lambda": options.lam, "tau": options.tau}
        local_models = [r.model for r in collected if r.used == "local" and r.model]
        model = max(set(local_models), key=local_models.count) if local_models else None
        rows = [result_row(r) for r in collected]
        digest = set_digest(list(questions))
        async with self.sessions.begin() as session:
            stored = await eval_runs_repo.insert_run(
                session, tenant_id=tenant_id, label=options.label, set_sha256=digest, mode=mode,
                questions=len(questions), model=model, settings=settings, metrics=figures, results=rows,
                duration_s=round(duration, 2))
        yield EvalDone({"id": str(stored), "label": options.label, "mode": mode, "set_sha256": digest,
                        "model": model, "settings": settings, "metrics": figures, "results": rows,
                        "duration_s": round(duration, 2)})

    async def _retrieve(self, tenant_id: str, question: str,
                        options: EvalOptions) -> tuple[list[Candidate], float, list[str]]:
        async with self.sessions() as session:
            found = await retrieve(session, self.inference, tenant_id, question, k=options.k, top_n=options.top_n,
                                   lam=options.lam, arms=options.arms,
                                   duplicate_similarity=options.duplicate_similarity, log_event=False,
                                   max_query_chars=options.max_query_chars)
        return ([Candidate(p.source_name, p.text) for p in found.passages], found.confidence,
                [w["reason"] for w in found.warnings])
