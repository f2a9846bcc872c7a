"""SQL of the response cache: the tenant's knowledge version and cache generation, stored answers, hit stats."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Epoch:
    """What a cached answer must agree on besides the question: it changes whenever answers may."""

    knowledge_version: int
    cache_generation: int
    active_adapter: str | None


@dataclass(frozen=True)
class StoredAnswer:
    payload: dict[str, Any]
    used: str
    model: str | None
    cost_usd: float
    expires_at: float  # epoch seconds
    similarity: float | None = None  # semantic matches only


async def epoch(session: AsyncSession, tenant_id: str) -> Epoch:
    row = (await session.execute(text("""
        SELECT coalesce(v.version, 0), coalesce(v.cache_generation, 0),
               (SELECT name FROM adapters WHERE tenant_id = :t AND status = 'active' LIMIT 1)
        FROM (SELECT 1) AS one LEFT JOIN knowledge_versions v ON v.tenant_id = :t
    """), {"t": tenant_id})).one()
    return Epoch(int(row[0]), int(row[1]), row[2])


async def bump_generation(session: AsyncSession, tenant_id: str) -> int:
    """A new cache generation (every key made before it is dead) and the tenant's stored answers gone."""
    generation = (await session.execute(text("""
        INSERT INTO knowledge_versions (tenant_id, cache_generation, updated_at) VALUES (:t, 1, now())
        ON CONFLICT (tenant_id) DO UPDATE
        SET cache_generation = knowledge_versions.cache_generation + 1, updated_at = now()
        RETURNING cache_generation
    """), {"t": tenant_id})).scalar_one()
    await session.execute(text("DELETE FROM response_cache WHERE tenant_id = :t"), {"t": tenant_id})
    return int(generation)


_ANSWER_COLUMNS = "payload, used, model, cost_usd, extract(epoch FROM expires_at)"


async def get(session: AsyncSession, tenant_id: str, cache_key: str) -> StoredAnswer | None:
    row = (await session.execute(text(f"""
        SELECT {_ANSWER_COLUMNS} FROM response_cache
        WHERE tenant_id = :t AND cache_key = :k AND expires_at > now()
    """), {"t": tenant_id, "k": cache_key})).first()
    return StoredAnswer(row[0], row[1], row[2], float(row[3]), float(row[4])) if row else None


async def nearest(session: AsyncSession, tenant_id: str, context_key: str, embedding: np.ndarray
                  ) -> StoredAnswer | None:
    """The stored answer whose question is nearest (cosine) to `embedding` under the same context."""
    row = (await session.execute(text(f"""
        SELECT {_ANSWER_COLUMNS}, 1 - (embedding <=> CAST(:q AS vector)) FROM response_cache
        WHERE tenant_id = :t AND context_key = :c AND embedding IS NOT NULL AND expires_at > now()
        ORDER BY embedding <=> CAST(:q AS vector) LIMIT 1
    """), {"t": tenant_id, "c": context_key, "q": _vector(embedding)})).first()
    return StoredAnswer(row[0], row[1], row[2], float(row[3]), float(row[4]), float(row[5])) if row else None


async def put(session: AsyncSession, *, tenant_id: str, cache_key: str, context_key: str, knowledge_version: int,
              question: str, embedding: np.ndarray | None, payload: dict[str, Any], used: str, model: str | None,
              cost_usd: float, ttl_s: float) -> float:
    """Store (or refresh) an answer; returns its expiry in epoch seconds."""
    expires = (await session.execute(text("""
        INSERT INTO response_cache (tenant_id, cache_key, context_key, knowledge_version, question, embedding,
                                    payload, used, model, cost_usd, expires_at)
        VALUES (:t, :k, :c, :v, :q, CAST(:e AS vector), CAST(:p AS jsonb), :u, :m, :cost,
                now() + make_interval(secs => :ttl))
        ON CONFLICT (tenant_id, cache_key) DO UPDATE
        SET payload = EXCLUDED.payload, used = EXCLUDED.used, model = EXCLUDED.model, cost_usd = EXCLUDED.cost_usd,
            embedding = EXCLUDED.embedding, created_at = now(), expires_at = EXCLUDED.expires_at
        RETURNING extract(epoch FROM expires_at)
    """), {"t": tenant_id, "k": cache_key, "c": context_key, "v": knowledge_version, "q": question,
           "e": _vector(embedding) if embedding is not None else None, "p": json.dumps(payload, ensure_ascii=False),
           "u": used, "m": model, "cost": cost_usd, "ttl": ttl_s})).scalar_one()
    return float(expires)


async def sweep(session: AsyncSession, tenant_id: str, knowledge_version: int) -> int:
    """Drop expired answers and those of older knowledge versions (no key can reach them any more)."""
    result = await session.execute(text("""
        DELETE FROM response_cache
        WHERE expires_at <= now() OR (tenant_id = :t AND knowledge_version < :v)
    """), {"t": tenant_id, "v": knowledge_version})
    return int(result.rowcount or 0)


async def stored(session: AsyncSession, tenant_id: str) -> tuple[int, float]:
    """(answers stored and still valid by time, what they cost when they were made)."""
    row = (await session.execute(text("""
        SELECT count(*), coalesce(sum(cost_usd), 0) FROM response_cache WHERE tenant_id = :t AND expires_at > now()
    """), {"t": tenant_id})).one()
    return int(row[0]), float(row[1])


async def hit_stats(session: AsyncSession, tenant_id: str, since: datetime) -> dict[str, Any]:
    """Complete answers since `since`, how many came from the cache (per level), and the money they saved."""
    row = (await session.execute(text("""
        SELECT count(*),
               count(*) FILTER (WHERE meta->>'cached' = 'true'),
               count(*) FILTER (WHERE meta->>'cache' = 'l1'),
               count(*) FILTER (WHERE meta->>'cache' = 'l2'),
               count(*) FILTER (WHERE meta->>'cache' = 'semantic'),
               coalesce(sum(CAST(meta->>'saved_usd' AS double precision)) FILTER (WHERE meta->>'cached' = 'true'), 0),
               count(*) FILTER (WHERE meta->>'cached' = 'true' AND meta->>'used' = 'fallback')
        FROM ai_events WHERE tenant_id = :t AND kind = 'answer' AND value = 1 AND created_at >= :s
    """), {"t": tenant_id, "s": since})).one()
    return {"answers": int(row[0]), "hits": int(row[1]), "l1": int(row[2]), "l2": int(row[3]),
            "semantic": int(row[4]), "saved_usd": float(row[5]), "paid_hits": int(row[6])}


def _vector(values: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in np.asarray(values, dtype=np.float32).ravel()) + "]"
