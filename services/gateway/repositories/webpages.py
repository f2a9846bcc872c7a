"""SQL for web pages kept as documents (`web_pages`); tenant explicit in every query."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import WebPage


async def get_by_url(session: AsyncSession, tenant_id: str, url: str) -> WebPage | None:
    return await session.scalar(select(WebPage).where(WebPage.tenant_id == tenant_id, WebPage.url == url))


async def upsert(session: AsyncSession, tenant_id: str, url: str, **values: Any) -> None:
    """Create the page's row or update it in place (one row per tenant and URL)."""
    stmt = insert(WebPage).values(id=uuid.uuid4(), tenant_id=tenant_id, url=url, **values)
    await session.execute(stmt.on_conflict_do_update(constraint="uq_web_pages_tenant_url", set_=values))


async def record(session: AsyncSession, page_id: uuid.UUID, **values: Any) -> None:
    await session.execute(update(WebPage).where(WebPage.id == page_id).values(**values))


async def list_due(session: AsyncSession, now: datetime, *, limit: int) -> list[WebPage]:
    """Pages whose next fetch is due, oldest first, locked so two refreshers never take the same page."""
    rows = await session.scalars(select(WebPage).where(WebPage.next_fetch_at <= now)
                                 .order_by(WebPage.next_fetch_at).limit(limit).with_for_update(skip_locked=True))
    return list(rows)


async def list_page(session: AsyncSession, tenant_id: str, *, limit: int, offset: int) -> list[WebPage]:
    rows = await session.scalars(select(WebPage).where(WebPage.tenant_id == tenant_id)
                                 .order_by(WebPage.created_at.desc(), WebPage.id).limit(limit).offset(offset))
    return list(rows)
