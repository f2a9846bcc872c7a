"""Alembic environment: runs online against DATABASE_URL (or the URL `shared.db.migrate` passes)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool, text

from shared.db import Base, make_sync_engine
from shared.db.settings import DatabaseSettings

# Any 64-bit constant works; it only has to be the same for every AION process.
MIGRATION_LOCK_KEY = 0x41494F4E  # "AION"

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return url or DatabaseSettings().resolve_database_url()


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_sync_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            # Gateway replicas, the scheduler and `aion db upgrade` may start together: one migrates,
            # the others wait and then find nothing to do.
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                context.configure(connection=connection, target_metadata=target_metadata,
                                  transaction_per_migration=False)
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
