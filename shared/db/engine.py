"""Engines and session factories (SQLAlchemy 2 + psycopg 3) built from one database URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def sqlalchemy_url(url: str) -> str:
    """Accept libpq-style URLs (postgresql://, postgres://) and select the psycopg 3 driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _session_settings(hnsw_ef_search: int | None) -> list[str]:
    statements = []
    if hnsw_ef_search:
        # strict_order: when a tenant filter drops candidates, the index scan keeps going instead of
        # returning fewer than LIMIT rows, and results stay in distance order.
        statements.append(f"SET hnsw.ef_search = {int(hnsw_ef_search)}")
        statements.append("SET hnsw.iterative_scan = strict_order")
    return statements


def _install_connect_settings(engine: Engine, statements: list[str]) -> None:
    if not statements:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit so that the pool's rollback-on-return does not undo the SETs.
        previous = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
            dbapi_connection.autocommit = previous


def _connect_args(connect_timeout_s: int) -> dict[str, Any]:
    return {"connect_timeout": connect_timeout_s, "application_name": "aion"}


def make_async_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, hnsw_ef_search: int | None = None,
                      connect_timeout_s: int = 5, **kwargs: Any) -> AsyncEngine:
    """The engine the gateway uses; pre-ping lets it recover after a Postgres restart."""
    engine = create_async_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=max_overflow,
                                 pool_pre_ping=True, connect_args=_connect_args(connect_timeout_s), **kwargs)
    _install_connect_settings(engine.sync_engine, _session_settings(hnsw_ef_search))
    return engine


def make_sync_engine(url: str, *, hnsw_ef_search: int | None = None, connect_timeout_s: int = 5,
                     **kwargs: Any) -> Engine:
    """A blocking engine for workers, migrations and scripts."""
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(sqlalchemy_url(url), connect_args=_connect_args(connect_timeout_s), **kwargs)
    _install_connect_settings(engine, _session_settings(hnsw_ef_search))
    return engine


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after the dependency commits.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
