"""At start: the embeddings server must give vectors of the dimension the knowledge base stores.

A different model (another URL, another AION_EMBED_MODEL) would make every search fail, or worse,
compare vectors from two models; so the gateway refuses to start and names both sides. An embeddings
server that is not up yet is not a reason to refuse (full-text retrieval still answers); then every
embedding call checks the dimension instead (clients/inference.py).
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import AionError, ServiceUnavailable

from ..clients.inference import InferenceClient
from ..repositories.vector_schema import stored_embedding_dim

logger = logging.getLogger(__name__)


class EmbeddingDimensionMismatch(AionError):
    code = "embedding_dimension_mismatch"


async def check_embedding_dimension(client: InferenceClient, sessions: async_sessionmaker[AsyncSession]) -> int:
    """The stored dimension; raises EmbeddingDimensionMismatch when the server gives another one."""
    async with sessions() as session:
        stored = await stored_embedding_dim(session)
    client.expected_dim = stored
    try:
        model, served = await client.probe()
    except ServiceUnavailable as exc:
        logger.warning("embedding dimension not checked at start (%s); every embedding call checks it", exc.message)
        return stored
    if served != stored:
        raise EmbeddingDimensionMismatch(
            f"the embeddings server at {client.base_url} ({client.url_setting}) serves '{model}' with {served} "
            f"dimensions, but the knowledge base stores {stored}-dimension vectors (chunks.embedding); serve a "
            f"{stored}-dimension model there (the default all-MiniLM-L6-v2 is one) or re-create the knowledge base")
    logger.info("embeddings: '%s' at %s, %d dimensions as stored", model, client.base_url, served)
    return stored
