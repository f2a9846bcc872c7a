"""SQL that reads how the knowledge base stores its vectors (the column's declared dimension)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def stored_embedding_dim(session: AsyncSession) -> int:
    """The dimension of `chunks.embedding` as the database declares it (pgvector keeps it in the typmod)."""
    return int((await session.execute(text("""
        SELECT atttypmod FROM pg_attribute
        WHERE attrelid = 'chunks'::regclass AND attname = 'embedding' AND NOT attisdropped
    """))).scalar_one())
