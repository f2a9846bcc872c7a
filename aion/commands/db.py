"""`aion db upgrade|downgrade|current` — schema migrations (the gateway also upgrades at start)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database migrations (DATABASE_URL, or the embedded Postgres)")
    actions = p.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", help="apply migrations up to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=run)
    down = actions.add_parser("downgrade", help="roll back to a revision (default: one step; 'base' removes all)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(func=run)
    cur = actions.add_parser("current", help="show the database's revision and the latest one")
    cur.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.db import migrate
    from shared.db.settings import DatabaseSettings
    from shared.logging import configure_logging

    settings = DatabaseSettings()
    configure_logging(settings.log_level, settings.log_json)
    url = settings.resolve_database_url()
    if args.db_action == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.db_action == "downgrade":
        migrate.downgrade(url, args.revision)
    sys.stdout.write(f"database at revision {migrate.current_revision(url) or 'base'} "
                     f"(latest {migrate.head_revision()})\n")
    return 0
