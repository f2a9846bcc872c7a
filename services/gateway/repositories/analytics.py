"""SQL behind GET /api/ai/metrics: counts, local vs fallback, confidence, latency, per-day series."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def counts_by_kind(session: AsyncSession, tenant_id: str, since: datetime) -> dict[str, int]:
    rows = (await session.execute(text("""
        SELECT kind, count(*) FROM ai_events WHERE tenant_id = :t AND created_at >= :s GROUP BY kind
    """), {"t": tenant_id, "s": since})).all()
    return {r[0]: int(r[1]) for r in rows}


async def answer_summary(session: AsyncSession, tenant_id: str, since: datetime) -> dict[str, Any]:
    row = (await session.execute(text("""
        SELECT count(*),
               count(*) FILTER (WHERE meta->>'used' = 'local'),
               count(*) FILTER (WHERE meta->>'used' = 'fallback'),
               count(*) FILTER (WHERE (meta->>'complete')::boolean IS NOT TRUE),
               avg((meta->>'C')::double precision),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY (meta->>'latency_ms')::double precision),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY (meta->>'latency_ms')::double precision),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY (meta->>'first_token_ms')::double precision),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY (meta->>'first_token_ms')::double precision)
        FROM ai_events WHERE tenant_id = :t AND kind = 'answer' AND created_at >= :s
    """), {"t": tenant_id, "s": since})).one()
    total = int(row[0])
    return {"answers": total, "local": int(row[1]), "fallback": int(row[2]), "incomplete": int(row[3]),
            "fallback_share": round(int(row[2]) / total, 4) if total else 0.0,
            "mean_confidence": round(float(row[4]), 4) if row[4] is not None else None,
            "latency_ms": {"p50": _num(row[5]), "p95": _num(row[6])},
            "first_token_ms": {"p50": _num(row[7]), "p95": _num(row[8])}}


async def answers_per_day(session: AsyncSession, tenant_id: str, since: datetime) -> list[dict[str, Any]]:
    rows = (await session.execute(text("""
        SELECT to_char(date_trunc('day', created_at), 'YYYY-MM-DD') AS day,
               count(*) FILTER (WHERE meta->>'used' = 'local'),
               count(*) FILTER (WHERE meta->>'used' = 'fallback'),
               avg((meta->>'C')::double precision),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY (meta->>'latency_ms')::double precision),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY (meta->>'latency_ms')::double precision)
        FROM ai_events WHERE tenant_id = :t AND kind = 'answer' AND created_at >= :s
        GROUP BY 1 ORDER BY 1
    """), {"t": tenant_id, "s": since})).all()
    return [{"day": r[0], "local": int(r[1]), "fallback": int(r[2]),
             "mean_confidence": round(float(r[3]), 4) if r[3] is not None else None,
             "latency_p50_ms": _num(r[4]), "latency_p95_ms": _num(r[5])} for r in rows]


async def feedback_summary(session: AsyncSession, tenant_id: str, since: datetime) -> dict[str, int]:
    row = (await session.execute(text("""
        SELECT count(*) FILTER (WHERE value > 0), count(*) FILTER (WHERE value < 0)
        FROM ai_events WHERE tenant_id = :t AND kind = 'feedback' AND created_at >= :s
    """), {"t": tenant_id, "s": since})).one()
    return {"up": int(row[0]), "down": int(row[1])}


async def answer_exists(session: AsyncSession, tenant_id: str, request_id: str) -> bool:
    return (await session.execute(text("""
        SELECT EXISTS (SELECT 1 FROM ai_events WHERE tenant_id = :t AND kind = 'answer' AND request_id = :r)
    """), {"t": tenant_id, "r": request_id})).scalar_one()


def _num(value: Any) -> float | None:
    return round(float(value), 1) if value is not None else None
