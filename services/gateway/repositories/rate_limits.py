"""SQL of the per-key token buckets, shared by every gateway replica (one row per bucket)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Taken:
    allowed: bool
    retry_after_s: int = 0


# One statement, atomic under the row lock: refill by the time since the last call (the database's
# clock, so replicas' clocks do not matter), then take a token if one is there.
_TAKE = text("""
    INSERT INTO rate_buckets AS b (bucket_key, tokens, allowed, updated_at)
    VALUES (:k, :cap - 1, true, now())
    ON CONFLICT (bucket_key) DO UPDATE SET
        tokens = CASE WHEN least(:cap, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * :rate) >= 1
                      THEN least(:cap, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * :rate) - 1
                      ELSE least(:cap, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * :rate) END,
        allowed = least(:cap, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * :rate) >= 1,
        updated_at = greatest(b.updated_at, now())
    RETURNING allowed, tokens
""")


async def take(session: AsyncSession, bucket_key: str, *, per_second: float, capacity: float) -> Taken:
    row = (await session.execute(_TAKE, {"k": bucket_key, "cap": capacity, "rate": per_second})).one()
    if row[0]:
        return Taken(True)
    return Taken(False, max(1, math.ceil((1.0 - float(row[1])) / per_second)))
