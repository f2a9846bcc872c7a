"""`aion keys create|list|revoke` — gateway API keys, straight in the database (no gateway needed)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="gateway API keys (DATABASE_URL, or the embedded Postgres)")
    actions = p.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown this once only)")
    create.add_argument("--name", required=True, help="who or what uses the key, e.g. 'laptop' or 'ci'")
    create.add_argument("--role", choices=["user", "admin"], default="user",
                        help="user: chat, search, feedback, read documents; admin: everything (default user)")
    create.add_argument("--tenant", help="tenant the key acts for (default PRIMARY_TENANT_ID)")
    create.set_defaults(func=run)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(func=run)
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("ref", metavar="ID_OR_PREFIX", help="the key's id, or its prefix as `aion keys list` shows it")
    revoke.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from shared.db.settings import DatabaseSettings
    from shared.logging import configure_logging

    settings = DatabaseSettings()
    configure_logging(settings.log_level, settings.log_json)
    return asyncio.run(_run(args, settings.resolve_database_url(), settings.tenant_id))


async def _run(args: argparse.Namespace, url: str, default_tenant: str) -> int:
    from sqlalchemy.exc import ProgrammingError

    from services.gateway.auth import repository
    from shared.db import make_async_engine, make_session_factory

    engine = make_async_engine(url, pool_size=1, max_overflow=0)
    try:
        async with make_session_factory(engine)() as session:
            try:
                if args.keys_action == "create":
                    code = await _create(session, args.name, args.role, args.tenant or default_tenant)
                elif args.keys_action == "list":
                    code = await _list(session, args.all)
                else:
                    code = await _revoke(session, args.ref)
            except ProgrammingError as exc:
                if "api_keys" not in str(exc.orig):
                    raise
                sys.stderr.write("aion: the database has no api_keys table yet; run `aion db upgrade` first\n")
                return 1
            except repository.AmbiguousKey as exc:
                sys.stderr.write(f"aion: {exc}\n")
                return 1
            await session.commit()
            return code
    finally:
        await engine.dispose()


async def _create(session: AsyncSession, name: str, role: str, tenant: str) -> int:
    from services.gateway.auth import repository
    from services.gateway.auth.keys import generate_key

    if not name.strip():
        sys.stderr.write("aion: --name must not be blank\n")
        return 2
    new_key = generate_key()
    row = await repository.create(session, name=name.strip(), role=role, tenant_id=tenant, new_key=new_key)
    sys.stdout.write(f"{new_key.key}\n")
    sys.stderr.write(f"created {role} key '{row.name}' for tenant '{tenant}' (id {row.id}, prefix {row.key_prefix}).\n"
                     "Store it now: only its hash is kept, it cannot be shown again. Send it as "
                     "`Authorization: Bearer <key>` (the CLI reads AION_API_KEY).\n")
    return 0


async def _list(session: AsyncSession, include_revoked: bool) -> int:
    from services.gateway.auth import repository

    rows = await repository.list_keys(session, include_revoked=include_revoked)
    if not rows:
        sys.stdout.write("no keys; create one with `aion keys create --name NAME --role admin`\n")
        return 0
    header = ("ID", "PREFIX", "NAME", "ROLE", "TENANT", "CREATED", "LAST USED", "REVOKED")
    lines = [header] + [
        (str(r.id), r.key_prefix, r.name, r.role, r.tenant_id, _when(r.created_at), _when(r.last_used_at),
         _when(r.revoked_at)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    sys.stdout.write("".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                             for line in lines))
    return 0


async def _revoke(session: AsyncSession, ref: str) -> int:
    from services.gateway.auth import repository

    row = await repository.find(session, ref.strip())
    if row is None:
        sys.stderr.write(f"aion: no key with id or prefix '{ref}'; `aion keys list --all` shows them\n")
        return 1
    if not await repository.revoke(session, row):
        sys.stdout.write(f"key '{row.name}' ({row.key_prefix}) was already revoked\n")
        return 0
    sys.stdout.write(f"revoked key '{row.name}' ({row.key_prefix}); the gateway refuses it from now on\n")
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
