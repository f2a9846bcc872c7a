"""SQL for the event log (`ai_events`): retrieval, answer, fallback, feedback …"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import AiEvent


async def insert_event(session: AsyncSession, tenant_id: str, kind: str, *, value: float | None = None,
                       meta: dict[str, Any] | None = None, request_id: str | None = None) -> int:
    """Append one event; returns its id. Committed with the caller's unit of work."""
    return int(await session.scalar(insert(AiEvent).values(
        tenant_id=tenant_id, kind=kind, value=value, meta=meta or {}, request_id=request_id).returning(AiEvent.id)))
