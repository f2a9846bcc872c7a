"""SQL for the training-data export: answer events in a window, negative feedback, and export runs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass
class AnswerRow:
    request_id: str | None
    created_at: datetime
    value: float | None
    meta: dict[str, Any]


async def answers_between(session: AsyncSession, tenant_id: str, start: datetime, end: datetime) -> list[AnswerRow]:
    rows = (await session.execute(text("""
        SELECT request_id, created_at, value, meta FROM ai_events
        WHERE tenant_id = :t AND kind = 'answer' AND created_at > :s AND created_at <= :e
        ORDER BY created_at, id
    """), {"t": tenant_id, "s": start, "e": end})).all()
    return [AnswerRow(r[0], r[1], r[2], r[3] or {}) for r in rows]


async def latest_ratings(session: AsyncSession, tenant_id: str, request_ids: list[str]) -> dict[str, float]:
    """{answer id: value of its latest feedback} (> 0 thumbs-up, < 0 thumbs-down) for the rated ones."""
    if not request_ids:
        return {}
    rows = (await session.execute(text("""
        SELECT DISTINCT ON (meta->>'answer_request_id') meta->>'answer_request_id', value
        FROM ai_events
        WHERE tenant_id = :t AND kind = 'feedback' AND meta->>'answer_request_id' = ANY(:ids)
        ORDER BY meta->>'answer_request_id', created_at DESC, id DESC
    """), {"t": tenant_id, "ids": request_ids})).all()
    return {r[0]: float(r[1] or 0.0) for r in rows}


async def replies_written_by_aion(session: AsyncSession, tenant_id: str, digests: list[str]) -> set[str]:
    """Of these SHA-256 digests (hex, of a reply with its ends stripped), those of logged answers' replies."""
    if not digests:
        return set()
    rows = (await session.execute(text("""
        SELECT DISTINCT encode(sha256(convert_to(btrim(meta->>'reply', E' \t\r\n'), 'UTF8')), 'hex')
        FROM ai_events
        WHERE tenant_id = :t AND kind = 'answer'
          AND encode(sha256(convert_to(btrim(meta->>'reply', E' \t\r\n'), 'UTF8')), 'hex') = ANY(:d)
    """), {"t": tenant_id, "d": digests})).all()
    return {r[0] for r in rows}


async def trained_until(session: AsyncSession, tenant_id: str) -> datetime | None:
    """The end of the data window of the job that trained the active adapter (None: no active adapter,
    or one with no recorded window): everything after it is not in the serving adapter yet."""
    return (await session.execute(text("""
        SELECT j.data_until FROM adapters a JOIN training_jobs j ON j.id = a.job_id
        WHERE a.tenant_id = :t AND a.status = 'active'
    """), {"t": tenant_id})).scalar_one_or_none()


async def last_watermark(session: AsyncSession, tenant_id: str, trigger: str) -> datetime | None:
    return (await session.execute(text("""
        SELECT max(watermark) FROM export_runs WHERE tenant_id = :t AND trigger = :g AND status = 'succeeded'
    """), {"t": tenant_id, "g": trigger})).scalar_one()


async def record_run(session: AsyncSession, *, tenant_id: str, trigger: str, fmt: str, window_start: datetime,
                     window_end: datetime, watermark: datetime | None, rows: int, skipped: dict[str, int],
                     path: str | None, status: str, error: str | None) -> uuid.UUID:
    run_id = uuid.uuid4()
    await session.execute(text("""
        INSERT INTO export_runs (id, tenant_id, trigger, format, window_start, window_end, watermark, rows,
                                 skipped, path, status, error)
        VALUES (:id, :t, :g, :f, :ws, :we, :wm, :n, CAST(:sk AS jsonb), :p, :st, :err)
    """), {"id": run_id, "t": tenant_id, "g": trigger, "f": fmt, "ws": window_start, "we": window_end,
           "wm": watermark, "n": rows, "sk": json.dumps(skipped), "p": path, "st": status, "err": error})
    return run_id


async def recent_runs(session: AsyncSession, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = (await session.execute(text("""
        SELECT id, trigger, format, window_start, window_end, watermark, rows, skipped, path, status, error, created_at
        FROM export_runs WHERE tenant_id = :t ORDER BY created_at DESC LIMIT :n
    """), {"t": tenant_id, "n": limit})).mappings().all()
    return [dict(r) for r in rows]
