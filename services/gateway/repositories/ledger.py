"""SQL of the fallback ledger: one row per paid call, reserved before it starts and settled after."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass
class PeriodTotals:
    spent_usd: float
    reserved_usd: float
    fallback_calls: int


async def lock_tenant_budget(session: AsyncSession, tenant_id: str) -> None:
    """Serialize budget decisions of one tenant until the transaction ends (no race can overspend)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('aion-budget:' || :t))"), {"t": tenant_id})


async def period_totals(session: AsyncSession, tenant_id: str, period_start: datetime) -> PeriodTotals:
    row = (await session.execute(text("""
        SELECT coalesce(sum(cost_usd) FILTER (WHERE status IN ('settled', 'failed', 'expired')), 0),
               coalesce(sum(reserved_usd) FILTER (WHERE status = 'reserved'), 0),
               count(*) FILTER (WHERE status IN ('reserved', 'settled'))
        FROM fallback_ledger WHERE tenant_id = :t AND period_start = :p
    """), {"t": tenant_id, "p": period_start})).one()
    return PeriodTotals(spent_usd=float(row[0]), reserved_usd=float(row[1]), fallback_calls=int(row[2]))


async def insert_reservation(session: AsyncSession, *, tenant_id: str, request_id: str, model: str,
                       period_start: datetime, reserved_usd: float, caller: str | None = None) -> uuid.UUID:
    entry_id = uuid.uuid4()
    await session.execute(text("""
        INSERT INTO fallback_ledger (id, tenant_id, request_id, model, period_start, status, reserved_usd, caller)
        VALUES (:id, :t, :r, :m, :p, 'reserved', :usd, :c)
    """), {"id": entry_id, "t": tenant_id, "r": request_id, "m": model, "p": period_start, "usd": reserved_usd,
           "c": caller})
    return entry_id


async def caller_committed(session: AsyncSession, tenant_id: str, period_start: datetime, caller: str) -> float:
    """What one caller spent or holds reserved this period."""
    return float((await session.execute(text("""
        SELECT coalesce(sum(CASE WHEN status = 'reserved' THEN reserved_usd ELSE cost_usd END), 0)
        FROM fallback_ledger WHERE tenant_id = :t AND period_start = :p AND caller = :c
    """), {"t": tenant_id, "p": period_start, "c": caller})).scalar_one())


async def settle(session: AsyncSession, entry_id: uuid.UUID, *, status: str, cost_usd: float, prompt_tokens: int,
           completion_tokens: int, usage_estimated: bool, error: str | None) -> bool:
    result = await session.execute(text("""
        UPDATE fallback_ledger
        SET status = :s, cost_usd = :c, prompt_tokens = :pt, completion_tokens = :ct,
            usage_estimated = :est, error = :e, settled_at = now()
        WHERE id = :id AND status = 'reserved'
    """), {"s": status, "c": cost_usd, "pt": prompt_tokens, "ct": completion_tokens, "est": usage_estimated,
           "e": error, "id": entry_id})
    return bool(result.rowcount)


async def expire_stale(session: AsyncSession, tenant_id: str, older_than_s: float) -> int:
    """Reservations whose process died mid-call: count them as spent in full (never under-count)."""
    result = await session.execute(text("""
        UPDATE fallback_ledger SET status = 'expired', cost_usd = reserved_usd, settled_at = now(),
               error = 'reservation expired: the call never settled'
        WHERE tenant_id = :t AND status = 'reserved' AND created_at < now() - make_interval(secs => :age)
    """), {"t": tenant_id, "age": older_than_s})
    return int(result.rowcount or 0)


async def answers_in_period(session: AsyncSession, tenant_id: str, period_start: datetime) -> int:
    return int((await session.execute(text("""
        SELECT count(*) FROM ai_events WHERE tenant_id = :t AND kind = 'answer' AND created_at >= :p
    """), {"t": tenant_id, "p": period_start})).scalar_one())


async def spend_by_day(session: AsyncSession, tenant_id: str, since: datetime) -> list[tuple[str, float, int]]:
    rows = (await session.execute(text("""
        SELECT to_char(date_trunc('day', created_at), 'YYYY-MM-DD'), coalesce(sum(cost_usd), 0), count(*)
        FROM fallback_ledger WHERE tenant_id = :t AND created_at >= :s
        GROUP BY 1 ORDER BY 1
    """), {"t": tenant_id, "s": since})).all()
    return [(r[0], float(r[1]), int(r[2])) for r in rows]
