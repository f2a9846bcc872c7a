"""SQL for chunks, including the pgvector ANN query (cosine distance over the HNSW index)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Chunk, Document


@dataclass(frozen=True)
class ChunkRow:
    document_id: uuid.UUID
    ord: int
    text: str
    heading: str | None
    page: int | None
    token_count: int
    embedding: np.ndarray


@dataclass(frozen=True)
class AnnHit:
    chunk_id: int
    document_id: uuid.UUID
    source_name: str
    title: str | None
    ord: int
    text: str
    heading: str | None
    page: int | None
    similarity: float  # cosine similarity, 1 - pgvector's cosine distance
    vector: np.ndarray


async def insert_many(session: AsyncSession, tenant_id: str, rows: Sequence[ChunkRow]) -> int:
    """Insert all rows (multi-row INSERTs); nothing is committed here."""
    if not rows:
        return 0
    await session.execute(insert(Chunk), [
        {"tenant_id": tenant_id, "document_id": r.document_id, "ord": r.ord, "text": r.text, "heading": r.heading,
         "page": r.page, "token_count": r.token_count, "embedding": r.embedding} for r in rows])
    return len(rows)


async def delete_for_document(session: AsyncSession, tenant_id: str, document_id: uuid.UUID) -> int:
    result = await session.execute(delete(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document_id))
    return int(result.rowcount or 0)


async def count_for_document(session: AsyncSession, tenant_id: str, document_id: uuid.UUID) -> int:
    return int(await session.scalar(select(func.count()).select_from(Chunk)
                                    .where(Chunk.tenant_id == tenant_id, Chunk.document_id == document_id)) or 0)


async def list_for_document(session: AsyncSession, tenant_id: str, document_id: uuid.UUID, *,
                            limit: int = 1000) -> list[Chunk]:
    rows = await session.scalars(select(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document_id)
                                 .order_by(Chunk.ord).limit(limit))
    return list(rows)


async def search_ann(session: AsyncSession, tenant_id: str, query_vector: np.ndarray, top_n: int) -> list[AnnHit]:
    """The `top_n` chunks nearest to `query_vector` by cosine distance, nearest first, with their vectors.

    The inner query is exactly pgvector's index-friendly form (ORDER BY distance LIMIT n on one table),
    so the HNSW index serves it; documents are joined to those n rows only.
    """
    distance = Chunk.embedding.cosine_distance(query_vector).label("distance")
    nearest = (select(Chunk.id, Chunk.document_id, Chunk.ord, Chunk.text, Chunk.heading, Chunk.page,
                      Chunk.embedding, distance)
               .where(Chunk.tenant_id == tenant_id).order_by(distance).limit(top_n).subquery())
    stmt = (select(nearest, Document.source_name, Document.title)
            .join(Document, Document.id == nearest.c.document_id).order_by(nearest.c.distance))
    result = await session.execute(stmt)
    return [AnnHit(chunk_id=row.id, document_id=row.document_id, source_name=row.source_name, title=row.title,
                   ord=row.ord, text=row.text, heading=row.heading, page=row.page,
                   similarity=1.0 - float(row.distance), vector=np.asarray(row.embedding, dtype=np.float32))
            for row in result]
