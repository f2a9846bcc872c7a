"""SQL for the event log (`ai_events`): retrieval, answer, fallback, feedback …"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import AiEvent


async def insert_event(session: AsyncSession, tenant_id: str, kind: str, *, value: float | None = None,
                       meta: dict[str, Any] | None = None, request_id: str | None = None) -> int:
    """Append one event; returns its id. Committed with the caller's unit of work."""
    return int(await session.scalar(insert(AiEvent).values(
        tenant_id=tenant_id, kind=kind, value=value, meta=meta or {}, request_id=request_id).returning(AiEvent.id)))


async def list_events(session: AsyncSession, tenant_id: str, *, kind: str | None = None,
                      since: datetime | None = None, request_id: str | None = None,
                      limit: int = 100) -> list[AiEvent]:
    """Newest first."""
    stmt = select(AiEvent).where(AiEvent.tenant_id == tenant_id)
    if kind is not None:
        stmt = stmt.where(AiEvent.kind == kind)
    if since is not None:
        stmt = stmt.where(AiEvent.created_at >= since)
    if request_id is not None:
        stmt = stmt.where(AiEvent.request_id == request_id)
    rows = await session.scalars(stmt.order_by(AiEvent.created_at.desc(), AiEvent.id.desc()).limit(limit))
    return list(rows)
