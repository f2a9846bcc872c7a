"""SQL for the adapter registry: versioned names (never reused), status, metrics, promotion time."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_COLUMNS = ("id, tenant_id, name, path, base_model, sha256, status, metrics, job_id, created_at, promoted_at, "
            "retired_at, pruned_at")


async def next_version_name(session: AsyncSession, tenant_id: str, prefix: str = "aion") -> str:
    """aion-v1, aion-v2, …: one more than any name ever registered (rejected ones included)."""
    count = (await session.execute(text("""
        SELECT coalesce(max(CAST(substring(name FROM '-v([0-9]+)$') AS integer)), 0)
        FROM adapters WHERE tenant_id = :t AND name ~ :pattern
    """), {"t": tenant_id, "pattern": f"^{prefix}-v[0-9]+$"})).scalar_one()
    return f"{prefix}-v{int(count) + 1}"


async def register(session: AsyncSession, *, tenant_id: str, name: str, path: str, base_model: str,
                   sha256: str | None, status: str, metrics: dict[str, Any], job_id: uuid.UUID | None) -> uuid.UUID:
    adapter_id = uuid.uuid4()
    await session.execute(text("""
        INSERT INTO adapters (id, tenant_id, name, path, base_model, sha256, status, metrics, job_id)
        VALUES (:id, :t, :n, :p, :b, :sha, :s, CAST(:m AS jsonb), :j)
    """), {"id": adapter_id, "t": tenant_id, "n": name, "p": path, "b": base_model, "sha": sha256, "s": status,
           "m": json.dumps(metrics), "j": job_id})
    return adapter_id


async def get(session: AsyncSession, tenant_id: str, name: str) -> dict[str, Any] | None:
    row = (await session.execute(text(f"SELECT {_COLUMNS} FROM adapters WHERE tenant_id = :t AND name = :n"),
                                 {"t": tenant_id, "n": name})).mappings().first()
    return dict(row) if row else None


async def active(session: AsyncSession, tenant_id: str) -> dict[str, Any] | None:
    row = (await session.execute(text(f"SELECT {_COLUMNS} FROM adapters WHERE tenant_id = :t AND status = 'active'"),
                                 {"t": tenant_id})).mappings().first()
    return dict(row) if row else None


async def make_active(session: AsyncSession, tenant_id: str, name: str) -> None:
    """Retire the current one and activate `name` in one transaction (a unique index allows one active)."""
    await session.execute(text("""
        UPDATE adapters SET status = 'retired', retired_at = now()
        WHERE tenant_id = :t AND status = 'active' AND name <> :n
    """), {"t": tenant_id, "n": name})
    await session.execute(text("""
        UPDATE adapters SET status = 'active', promoted_at = now(), retired_at = NULL WHERE tenant_id = :t AND name = :n
    """), {"t": tenant_id, "n": name})


async def deactivate_all(session: AsyncSession, tenant_id: str) -> None:
    await session.execute(text("""
        UPDATE adapters SET status = 'retired', retired_at = now() WHERE tenant_id = :t AND status = 'active'
    """), {"t": tenant_id})


async def rollback_target(session: AsyncSession, tenant_id: str) -> dict[str, Any] | None:
    """The adapter that served before the active one (the last one retired), if its files are still there."""
    row = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM adapters WHERE tenant_id = :t AND status = 'retired' AND retired_at IS NOT NULL
          AND pruned_at IS NULL
        ORDER BY retired_at DESC LIMIT 1"""), {"t": tenant_id})).mappings().first()
    return dict(row) if row else None


async def mark_pruned(session: AsyncSession, tenant_id: str, name: str) -> None:
    await session.execute(text("UPDATE adapters SET pruned_at = now() WHERE tenant_id = :t AND name = :n"),
                          {"t": tenant_id, "n": name})


async def serving_figures(session: AsyncSession, tenant_id: str) -> dict[str, dict[str, Any]]:
    """Per adapter that ever served: answers it gave, thumbs up/down on them (latest rating per answer),
    and the fallback's share of all answers while it was the active one."""
    rows = (await session.execute(text("""
        WITH served AS (
            SELECT a.name, count(e.id) AS answers,
                   count(*) FILTER (WHERE f.value > 0) AS up, count(*) FILTER (WHERE f.value < 0) AS down
            FROM adapters a
            JOIN ai_events e ON e.tenant_id = a.tenant_id AND e.kind = 'answer' AND e.meta->>'used' = 'local'
                            AND e.meta->>'model' = a.name
            LEFT JOIN LATERAL (
                SELECT fb.value FROM ai_events fb
                WHERE fb.tenant_id = e.tenant_id AND fb.kind = 'feedback'
                  AND fb.meta->>'answer_request_id' = e.request_id
                ORDER BY fb.created_at DESC, fb.id DESC LIMIT 1) f ON true
            WHERE a.tenant_id = :t
            GROUP BY a.name),
        period AS (
            SELECT a.name, count(e.id) AS answers,
                   count(*) FILTER (WHERE e.meta->>'used' = 'fallback') AS fallback
            FROM adapters a
            JOIN ai_events e ON e.tenant_id = a.tenant_id AND e.kind = 'answer'
                            AND e.created_at >= a.promoted_at AND e.created_at < coalesce(a.retired_at, now())
            WHERE a.tenant_id = :t AND a.promoted_at IS NOT NULL
            GROUP BY a.name)
        SELECT coalesce(s.name, p.name), coalesce(s.answers, 0), coalesce(s.up, 0), coalesce(s.down, 0),
               coalesce(p.answers, 0), coalesce(p.fallback, 0)
        FROM served s FULL JOIN period p ON p.name = s.name
    """), {"t": tenant_id})).all()
    return {r[0]: {"answers_served": int(r[1]), "thumbs_up": int(r[2]), "thumbs_down": int(r[3]),
                   "answers_while_active": int(r[4]),
                   "fallback_rate": round(int(r[5]) / int(r[4]), 4) if r[4] else None} for r in rows}


async def list_all(session: AsyncSession, tenant_id: str) -> list[dict[str, Any]]:
    rows = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM adapters WHERE tenant_id = :t ORDER BY created_at DESC"""),
        {"t": tenant_id})).mappings().all()
    return [dict(r) for r in rows]
