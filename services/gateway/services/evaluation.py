"""`aion eval`: every question of a set through the real answer path (or retrieval alone), scored.

Per question: where the expected passage ranked among the passages the answer was given (hit@1, hit@5,
reciprocal rank), whether the answer contains an expected string, cites a passage of the expected
document, says "not found" (services/not_found.py) and echoes the prompt's instructions; its route
(local or fallback), cost and latency. The run's figures, its per-question outcomes and the settings
and model it ran with are stored in `eval_runs`, so runs compare over time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shared.errors import BadRequest

from .answer import AnswerEvent, AnswerRequest
from .citations import cited_numbers
from .eval_set import EvalQuestion
from .not_found import fold, is_not_found
from .selection import EVAL_REQUEST_PREFIX

# Lines of the RAG prompt that an answer should never repeat (Portuguese prompt, and its English form).
INSTRUCTION_MARKERS = ("use apenas", "pergunta:", "contexto:", "instrucoes:", "nao invente", "cite as passagens",
                       "use only", "question:", "context:", "instructions:", "do not make up", "cite the passages")
MAX_ANSWER_CHARS = 4000  # stored per question; longer answers are cut (the figures use the whole text)


@dataclass(frozen=True)
class Candidate:
    """One passage as the run saw it, in rank order."""

    document: str  # source name
    text: str


@dataclass
class QuestionResult:
    index: int  # 1-based, in the set's order
    id: str | None
    kind: str | None
    question: str
    rank: int | None = None  # 1-based rank of the first right passage; None: not among those retrieved
    confidence: float | None = None
    used: str | None = None
    model: str | None = None  # the model (adapter) that answered
    answer: str | None = None
    contains: bool | None = None
    # The local model's own answer where the answer path replaced it (unsupported by the passages:
    # re-answered by the fallback or quoted); None when the served answer is the local model's or it gave none.
    local_answer: str | None = None
    local_contains: bool | None = None  # the local model's own answer (served or replaced) holds the answer
    citation_correct: bool | None = None
    not_found: bool | None = None
    instruction_echo: bool | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class EvalSettings:
    """What a run ran with: stored beside its figures."""

    mode: str  # "answer" or "retrieval"
    label: str
    set_sha256: str
    settings: dict[str, Any]
    model: str | None


# (question) -> (candidates in rank order, C, warnings): retrieval alone.
RetrieveFn = Callable[[str], Awaitable[tuple[list[Candidate], float, list[str]]]]
AnswerFn = Callable[[AnswerRequest], AsyncIterator[AnswerEvent]]
StoreFn = Callable[[EvalSettings, dict[str, Any], list[dict[str, Any]], float], Awaitable[uuid.UUID]]


def passage_rank(question: EvalQuestion, candidates: Sequence[Candidate]) -> int | None:
    """1-based rank of the first candidate from the expected document (containing the expected passage)."""
    if not question.expect_document:
        return None
    needle = fold(question.expect_passage) if question.expect_passage else None
    for rank, c in enumerate(candidates, start=1):
        if c.document == question.expect_document and (needle is None or needle in fold(c.text)):
            return rank
    return None


def contains_any(answer: str, expected: Sequence[str]) -> bool:
    folded = fold(answer)
    return any(fold(e) in folded for e in expected)


def echoes_instructions(answer: str) -> bool:
    folded = fold(answer)
    return any(marker in folded for marker in INSTRUCTION_MARKERS)


def check_documents(questions: Sequence[EvalQuestion], known: set[str]) -> None:
    """A 400 naming the set's documents that are not in the knowledge base (a typo is not a miss)."""
    missing = sorted({q.expect_document for q in questions if q.expect_document and q.expect_document not in known})
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise BadRequest(f"expect_document names documents that are not in the knowledge base: {shown}; ingest "
                         "them first (e.g. `aion ingest bench/eval/corpus`) or fix the names", code="unknown_document")


async def run_retrieval_only(questions: Sequence[EvalQuestion], retrieve: RetrieveFn,
                             ) -> AsyncIterator[QuestionResult]:
    for index, q in enumerate(questions, start=1):
        result = QuestionResult(index=index, id=q.id, kind=q.kind, question=q.question)
        started = time.perf_counter()
        candidates, confidence, warnings = await retrieve(q.question)
        result.latency_ms = (time.perf_counter() - started) * 1000
        result.rank, result.confidence, result.warnings = passage_rank(q, candidates), confidence, warnings
        yield result


async def run_answers(questions: Sequence[EvalQuestion], answer: AnswerFn, *, tenant_id: str, tau: float,
                      names: dict[str, str], run_id: str) -> AsyncIterator[QuestionResult]:
    """Each question through the answer router, as a chat request without history would go."""
    for index, q in enumerate(questions, start=1):
        result = QuestionResult(index=index, id=q.id, kind=q.kind, question=q.question)
        started = time.perf_counter()
        sources: list[dict[str, Any]] = []
        parts: list[str] = []
        done: dict[str, Any] | None = None
        local: str | None = None  # the local model's answer, once the answer path replaced it
        request = AnswerRequest(question=q.question, tenant_id=tenant_id, request_id=f"{EVAL_REQUEST_PREFIX}{run_id}-{index}",
                                tau=tau, use_cache=False)
        async for event in answer(request):
            if event.type == "sources":
                sources, result.confidence = event.data["sources"], event.data["C"]
            elif event.type == "token":
                parts.append(event.data["text"])
            elif event.type == "warn":
                reason = event.data.get("reason", "warn")
                result.warnings.append(reason)
                if event.data.get("restart"):
                    if reason == "unsupported_answer" and local is None:
                        local = "".join(parts).strip()
                    parts.clear()
            elif event.type == "error":
                result.error = event.data.get("message", "the answer failed")
            elif event.type == "done":
                done = event.data
        result.latency_ms = (time.perf_counter() - started) * 1000
        candidates = [Candidate(names.get(s["document"], s.get("title") or ""), s["text"]) for s in sources]
        result.rank = passage_rank(q, candidates)
        if done is not None:
            text = "".join(parts).strip()
            result.used, result.model = done.get("used"), done.get("model")
            result.cost_usd = float(done.get("usage", {}).get("cost_usd") or 0.0)
            result.answer = text[:MAX_ANSWER_CHARS]
            result.not_found = is_not_found(text)
            result.instruction_echo = echoes_instructions(text)
            result.local_answer = None if local is None else local[:MAX_ANSWER_CHARS]
            own = local if local is not None else text if result.used == "local" else None
            if q.answer_contains:
                result.contains = contains_any(text, q.answer_contains)
                result.local_contains = None if own is None else contains_any(own, q.answer_contains)
            if q.expect_document:
                cited = [candidates[n - 1].document for n in cited_numbers(text) if 1 <= n <= len(candidates)]
                result.citation_correct = q.expect_document in cited
        yield result


def summarize(questions: Sequence[EvalQuestion], results: Sequence[QuestionResult], mode: str) -> dict[str, Any]:
    """The run's figures (fractions in [0, 1]; None where no question qualifies)."""
    pairs = list(zip(questions, results, strict=True))
    figures: dict[str, Any] = {"questions": len(results), "retrieval": _retrieval_figures(pairs)}
    kinds = sorted({q.kind for q, _ in pairs if q.kind and q.expect_document})
    figures["retrieval"]["by_kind"] = {k: _retrieval_figures([(q, r) for q, r in pairs if q.kind == k]) for k in kinds}
    answerable = [r.confidence for q, r in pairs if not q.unanswerable and r.confidence is not None]
    unanswerable = [r.confidence for q, r in pairs if q.unanswerable and r.confidence is not None]
    figures["confidence"] = {"answerable_mean": _mean(answerable), "unanswerable_mean": _mean(unanswerable)}
    latencies = [r.latency_ms for r in results]
    figures["latency_ms"] = {"p50": round(float(np.percentile(latencies, 50)), 1),
                             "p95": round(float(np.percentile(latencies, 95)), 1)}
    figures["degraded"] = sum("embeddings_unavailable" in r.warnings for r in results)
    if mode == "answer":
        answered = [(q, r) for q, r in pairs if r.answer is not None]
        figures["answers"] = {
            "answered": len(answered),
            "errors": sum(r.error is not None for r in results),
            "containment": _share([r.contains for _, r in answered if r.contains is not None]),
            "citation_correct": _share([r.citation_correct for _, r in answered if r.citation_correct is not None]),
            "not_found_correct": _share([bool(r.not_found) for q, r in answered if q.unanswerable]),
            "false_not_found": _share([bool(r.not_found) for q, r in answered if not q.unanswerable]),
            "fallback_rate": _share([r.used == "fallback" for _, r in answered]),
            # The local model alone, replaced answers included: whether the model itself gets better.
            "local_containment": _share([r.local_contains for _, r in answered if r.local_contains is not None]),
            "replaced_local": sum(r.local_answer is not None for _, r in answered),
            "instruction_echo": sum(bool(r.instruction_echo) for _, r in answered),
            "cost_usd": round(sum(r.cost_usd for r in results), 6),
        }
    return figures


def _retrieval_figures(pairs: Sequence[tuple[EvalQuestion, QuestionResult]]) -> dict[str, Any]:
    ranks = [r.rank for q, r in pairs if q.expect_document]
    if not ranks:
        return {"questions": 0, "hit@1": None, "hit@5": None, "mrr": None}
    return {"questions": len(ranks),
            "hit@1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
            "hit@5": round(sum(r is not None and r <= 5 for r in ranks) / len(ranks), 4),
            "mrr": round(sum(1.0 / r for r in ranks if r) / len(ranks), 4)}


def _share(flags: Sequence[bool]) -> dict[str, Any] | None:
    return {"rate": round(sum(flags) / len(flags), 4), "of": len(flags)} if flags else None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def result_row(result: QuestionResult) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(result).items()}
