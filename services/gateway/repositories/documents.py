"""SQL for documents (tenant explicit in every query)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Document


async def get(session: AsyncSession, tenant_id: str, document_id: uuid.UUID) -> Document | None:
    return await session.scalar(select(Document).where(Document.tenant_id == tenant_id,
                                                       Document.id == document_id))


async def get_by_sha256(session: AsyncSession, tenant_id: str, sha256: str) -> Document | None:
    return await session.scalar(select(Document).where(Document.tenant_id == tenant_id, Document.sha256 == sha256))


async def get_by_name_for_update(session: AsyncSession, tenant_id: str, source_name: str) -> Document | None:
    """The document with this name, row-locked so a concurrent re-upload waits for this one."""
    return await session.scalar(select(Document).where(Document.tenant_id == tenant_id,
                                                       Document.source_name == source_name).with_for_update())


async def list_page(session: AsyncSession, tenant_id: str, *, limit: int, offset: int) -> tuple[list[Document], int]:
    total = await session.scalar(select(func.count()).select_from(Document).where(Document.tenant_id == tenant_id))
    rows = await session.scalars(select(Document).where(Document.tenant_id == tenant_id)
                                 .order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def insert(session: AsyncSession, **values: Any) -> Document:
    document = Document(**values)
    session.add(document)
    await session.flush()
    return document


async def update_content(session: AsyncSession, document: Document, **values: Any) -> Document:
    await session.execute(update(Document).where(Document.id == document.id)
                          .values(**values, updated_at=func.now()))
    await session.refresh(document)
    return document


async def delete_document(session: AsyncSession, tenant_id: str, document_id: uuid.UUID) -> Document | None:
    """Delete the document (its chunks go by ON DELETE CASCADE); returns the deleted row, or None."""
    result = await session.execute(delete(Document).where(Document.tenant_id == tenant_id, Document.id == document_id)
                                   .returning(Document))
    return result.scalar_one_or_none()


async def source_names(session: AsyncSession, tenant_id: str) -> dict[uuid.UUID, str]:
    """Every document's id -> source name (what an evaluation set names documents by)."""
    rows = await session.execute(select(Document.id, Document.source_name).where(Document.tenant_id == tenant_id))
    return {row[0]: row[1] for row in rows}
