"""Evaluation runs (admin): POST /api/ai/eval runs a question set; GET /api/ai/eval/runs lists stored runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse

from shared.errors import AionError, BadRequest

from ..deps import SessionDep, StateDep, TenantDep
from ..repositories import eval_runs as eval_runs_repo
from ..schemas import EvalRequest, EvalRunList, EvalRunPublic
from ..services.eval_runner import EvalDone, EvalOptions, EvalProgress, EvalRunner
from ..services.evaluation import result_row
from ..settings import GatewaySettings

router = APIRouter(prefix="/api/ai/eval", tags=["evaluation"])


def _options(body: EvalRequest, settings: GatewaySettings) -> EvalOptions:
    if not body.retrieval_only and (body.vector_weight is not None or body.text_weight is not None):
        raise BadRequest("vector_weight and text_weight apply to retrieval-only runs; the answer path runs with "
                         "the gateway's AION_RETRIEVAL_* settings", code="weights_need_retrieval_only")
    arms = settings.retrieval_arms(body.vector_weight, body.text_weight)
    if arms.vector == 0 and arms.text == 0:
        raise BadRequest("vector_weight and text_weight are both 0: give at least one arm a weight above 0",
                         code="no_retrieval_arm")
    recorded = {"local_model": settings.local_model, "local_max_tokens": settings.local_max_tokens,
                "local_temperature": settings.local_temperature, "fallback": settings.fallback_enabled(),
                "fallback_model": settings.fallback_model if settings.fallback_enabled() else None,
                "chunk_tokens": settings.chunk_tokens, "hnsw_ef_search": settings.hnsw_ef_search}
    return EvalOptions(label=body.label, retrieval_only=body.retrieval_only, arms=arms, k=settings.top_k,
                       top_n=settings.top_n, lam=settings.mmr_lambda,
                       duplicate_similarity=settings.mmr_duplicate_similarity,
                       tau=settings.tau_confidence if body.tau is None else body.tau,
                       max_query_chars=settings.max_query_chars, settings=recorded)


@router.post("", response_model=None)
async def run_eval(body: EvalRequest, state: StateDep, tenant: TenantDep):
    """Every question through the answer path (or retrieval alone); the figures, stored as a run.

    With `stream: true` the response is SSE: a `result` event per question as it finishes, then
    `done` with the stored run (or `error`). Otherwise one JSON body with the run.
    """
    options = _options(body, state.settings)
    runner = EvalRunner(state.sessions, state.inference, state.answers)
    events = runner.run(tenant, body.questions, options)
    if not body.stream:
        async for event in events:
            if isinstance(event, EvalDone):
                return event.run
        raise AionError("the evaluation ended without a result")

    first = await anext(events)  # errors in the set (unknown documents) are still a plain 4xx

    async def frames() -> AsyncIterator[dict[str, Any]]:
        try:
            yield _frame(first)
            async for event in events:
                yield _frame(event)
        except AionError as exc:
            yield {"event": "error", "data": json.dumps({"message": exc.message, "code": exc.code})}

    return EventSourceResponse(frames(), ping=15)


def _frame(event: EvalProgress | EvalDone) -> dict[str, Any]:
    if isinstance(event, EvalProgress):
        return {"event": "result", "data": json.dumps({"total": event.total, **result_row(event.result)},
                                                      ensure_ascii=False)}
    return {"event": "done", "data": json.dumps(event.run, ensure_ascii=False)}


@router.get("/runs", response_model=EvalRunList)
async def list_runs(session: SessionDep, tenant: TenantDep,
                    limit: Annotated[int, Query(ge=1, le=200)] = 20) -> EvalRunList:
    """The latest stored runs, newest first (figures and settings; per-question outcomes via the run)."""
    runs = await eval_runs_repo.latest(session, tenant, limit=limit)
    return EvalRunList(runs=[EvalRunPublic.model_validate(r) for r in runs])
