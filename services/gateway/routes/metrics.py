"""Telemetry for the panel (GET /api/ai/metrics), the budget, and the training-data export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..deps import SessionDep, StateDep, TenantDep
from ..repositories import analytics, exports

router = APIRouter()


@router.get("/api/ai/metrics")
async def metrics(session: SessionDep, tenant: TenantDep,
                  days: Annotated[int, Query(ge=1, le=365)] = 7) -> dict:
    since = datetime.now(UTC) - timedelta(days=days)
    return {"days": days, "since": since.isoformat(),
            "counts": await analytics.counts_by_kind(session, tenant, since),
            **await analytics.answer_summary(session, tenant, since),
            "feedback": await analytics.feedback_summary(session, tenant, since),
            "per_day": await analytics.answers_per_day(session, tenant, since)}


@router.get("/api/ai/budget")
async def budget(state: StateDep, tenant: TenantDep) -> dict:
    """Cap, spent, reserved, remaining and the fallback share of the current period."""
    status = await state.budget.status(tenant)
    status["fallback_configured"] = state.answers.fallback is not None
    return status


class ExportRequest(BaseModel):
    days: int = Field(default=1, ge=1, le=3650)
    format: Literal["chat", "seed"] = "chat"


@router.post("/api/ai/metrics/export.jsonl")
async def export_jsonl(state: StateDep, tenant: TenantDep, body: ExportRequest | None = None) -> dict:
    """The seed's contract: {days} → {ok, out, rows}. Writes to AION_EVENTS_JSONL atomically."""
    body = body or ExportRequest()
    result = await state.exporter.export(tenant_id=tenant, out=state.settings.export_path(), days=body.days,
                                         fmt=body.format, trigger="manual")
    return {"ok": True, "out": str(result.path), "rows": result.rows, "skipped": result.skipped,
            "window": {"start": result.window_start.isoformat(), "end": result.window_end.isoformat()}}


@router.get("/api/ai/metrics/export.jsonl")
async def export_download(state: StateDep, tenant: TenantDep,
                          days: Annotated[int, Query(ge=1, le=3650)] = 1,
                          format: Annotated[Literal["chat", "seed"], Query()] = "chat") -> Response:  # noqa: A002
    """The same rows, returned to the caller (what `aion export --out FILE` writes locally)."""
    rows, result = await state.exporter.collect(tenant_id=tenant, days=days, fmt=format)
    await state.exporter.record(tenant, format, "manual", result, path=None)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return Response(body, media_type="application/x-ndjson",
                    headers={"X-AION-Rows": str(result.rows), "X-AION-Skipped": json.dumps(result.skipped)})


@router.get("/api/ai/metrics/exports")
async def export_runs(session: SessionDep, tenant: TenantDep) -> dict:
    return {"runs": await exports.recent_runs(session, tenant)}
