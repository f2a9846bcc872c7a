"""SQL for the adapter registry: versioned names (never reused), status, metrics, promotion time."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_COLUMNS = "id, tenant_id, name, path, base_model, sha256, status, metrics, job_id, created_at, promoted_at"


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
        UPDATE adapters SET status = 'retired' WHERE tenant_id = :t AND status = 'active' AND name <> :n
    """), {"t": tenant_id, "n": name})
    await session.execute(text("""
        UPDATE adapters SET status = 'active', promoted_at = now() WHERE tenant_id = :t AND name = :n
    """), {"t": tenant_id, "n": name})


async def deactivate_all(session: AsyncSession, tenant_id: str) -> None:
    await session.execute(text("UPDATE adapters SET status = 'retired' WHERE tenant_id = :t AND status = 'active'"),
                          {"t": tenant_id})


async def list_all(session: AsyncSession, tenant_id: str) -> list[dict[str, Any]]:
    rows = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM adapters WHERE tenant_id = :t ORDER BY created_at DESC"""),
        {"t": tenant_id})).mappings().all()
    return [dict(r) for r in rows]
