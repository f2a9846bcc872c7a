"""SQL for API keys: create, look up by hash, list, revoke (shared by the gateway and `aion keys`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import ApiKey

from .keys import NewKey, hash_key
from .principal import Principal, Role

# last_used_at is refreshed at most this often, so steady traffic on one key is reads, not row writes.
TOUCH_EVERY = timedelta(minutes=1)


class AmbiguousKey(LookupError):
    """More than one key matches what the caller typed."""


async def create(session: AsyncSession, *, name: str, role: Role, tenant_id: str, new_key: NewKey) -> ApiKey:
    row = ApiKey(id=uuid.uuid4(), name=name, role=role, tenant_id=tenant_id, key_prefix=new_key.prefix,
                 key_hash=new_key.hash)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def authenticate(session: AsyncSession, key_hash: str) -> Principal | None:
    """The principal of an active key with this hash (and a fresh last_used_at), or None."""
    row = (await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.tenant_id, ApiKey.last_used_at)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))).first()
    if row is None:
        return None
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return Principal(key_id=row.id, name=row.name, role=row.role, tenant_id=row.tenant_id)


async def principal_by_id(session: AsyncSession, key_id: uuid.UUID) -> Principal | None:
    """The principal of the active key `key_id` (a token's key): None once it is revoked."""
    row = (await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.tenant_id)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))).first()
    return Principal(key_id=row.id, name=row.name, role=row.role, tenant_id=row.tenant_id) if row else None


async def external_principal(session: AsyncSession, *, subject: str, name: str, role: Role,
                             tenant_id: str) -> Principal | None:
    """The row of a person an external issuer signed in (made on first sight, role kept up to date);
    None when an admin revoked it."""
    now = datetime.now(UTC)
    # No usable key: the stored hash is of a string no `aion_` key can be. ON CONFLICT: two first
    # requests of one person at once make one row.
    await session.execute(pg_insert(ApiKey).values(
        id=uuid.uuid4(), name=f"sso:{name}"[:128], role=role, tenant_id=tenant_id, key_prefix="sso",
        key_hash=hash_key(f"external:{subject}"), external_subject=subject, last_used_at=now,
    ).on_conflict_do_nothing(index_elements=["external_subject"]))
    row = (await session.execute(select(ApiKey).where(ApiKey.external_subject == subject))).scalar_one()
    if row.revoked_at is not None:
        return None
    if row.role != role or row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(role=role, last_used_at=now))
    return Principal(key_id=row.id, name=row.name, role=role, tenant_id=row.tenant_id, via="external")


async def list_keys(session: AsyncSession, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.scalars(query)).all())


async def find(session: AsyncSession, ref: str) -> ApiKey | None:
    """The key whose id or display prefix is `ref` (a prefix may be shortened while it stays unique)."""
    conditions = [ApiKey.key_prefix.startswith(ref, autoescape=True)] if len(ref) >= 6 else []
    try:
        conditions.append(ApiKey.id == uuid.UUID(ref))
    except ValueError:
        pass
    if not conditions:
        return None
    rows = list((await session.scalars(select(ApiKey).where(or_(*conditions)))).all())
    if len(rows) > 1:
        raise AmbiguousKey(f"'{ref}' matches {len(rows)} keys ({', '.join(r.key_prefix for r in rows)}); "
                           "give the key's id or a longer prefix")
    return rows[0] if rows else None


async def revoke(session: AsyncSession, key: ApiKey) -> bool:
    """Revoke `key`; False when it already was (the first revocation time is kept)."""
    result = await session.execute(update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
                                   .values(revoked_at=datetime.now(UTC)))
    return bool(result.rowcount)
