"""`aion up` — the whole stack on one machine, no Docker: each service a child process of this one.

Postgres is the embedded one (started in this process, stopped after the children) unless
DATABASE_URL is set; migrations run once (`aion db upgrade`) before the gateway, scheduler and
trainer start. Logs come out prefixed (`[gateway] ...`); Ctrl-C stops everything. See aion/supervisor.py
for the stop and crash policy.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import sys
from collections.abc import Sequence

from aion.supervisor import ServiceSpec, Supervisor

# In start order. `migrate` is added by itself whenever a service that needs the database is chosen.
SERVICES = ("inference", "gateway", "scheduler", "trainer")
COMMANDS = {
    "migrate": ("db", "upgrade"),
    "inference": ("inference",),
    "gateway": ("gateway",),
    "scheduler": ("scheduler",),
    "trainer": ("trainer", "worker"),
}
NEEDS_DB = {"migrate", "gateway", "scheduler", "trainer"}

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the whole stack on this machine (embedded Postgres, no Docker)",
                       description=__doc__)
    p.add_argument("--services", default=",".join(SERVICES),
                   help=f"comma-separated subset to start (default: {','.join(SERVICES)})")
    p.add_argument("--host", default="127.0.0.1", help="gateway bind address (default 127.0.0.1)")
    p.add_argument("--gateway-port", type=int, default=3000, help="gateway port (default 3000)")
    p.add_argument("--inference-port", type=int, default=8008, help="inference port, on 127.0.0.1 (default 8008)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds every service gets to become ready (default 900)")
    p.add_argument("--grace", type=float, default=20.0,
                   help="seconds each service gets to stop before it is killed (default 20)")
    p.set_defaults(func=run)


def subcommand_paths(parser: argparse.ArgumentParser) -> set[tuple[str, ...]]:
    """Every runnable command path of a parser: {("inference",), ("db", "upgrade"), ...}."""
    paths: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = subcommand_paths(child)
                paths.add((name,))
                paths.update((name, *rest) for rest in nested)
    return paths


def choose(selection: str) -> list[str]:
    """The services to start, in start order, with `migrate` when one of them needs the database."""
    wanted = [s.strip() for s in selection.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SERVICES))
    if unknown or not wanted:
        raise ValueError(f"unknown service(s) {unknown or selection!r}; choose from {', '.join(SERVICES)}")
    chosen = [s for s in SERVICES if s in wanted]
    return (["migrate"] if NEEDS_DB & set(chosen) else []) + chosen


def _port_free(host: str, port: int) -> bool:
    """Free for a server: nothing listens there (connections in TIME_WAIT do not count, as for uvicorn)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def build_table(names: Sequence[str], *, host: str, gateway_port: int, inference_port: int,
                database_url: str | None, inference_token: str) -> list[ServiceSpec]:
    """The service table for the chosen names (see `choose`)."""
    aion = [sys.executable, "-m", "aion"]
    inference_url = f"http://127.0.0.1:{inference_port}"
    db_env = {"DATABASE_URL": database_url} if database_url else {}
    migrate_first = ("migrate",) if "migrate" in names else ()
    table: dict[str, ServiceSpec] = {
        "migrate": ServiceSpec("migrate", [*aion, *COMMANDS["migrate"]], env=db_env, oneshot=True),
        "inference": ServiceSpec(
            "inference", [*aion, *COMMANDS["inference"]],
            env={"AION_HOST": "127.0.0.1", "AION_PORT": str(inference_port),
                 "AION_INFERENCE_TOKEN": inference_token},
            health_url=f"{inference_url}/health", ready_status="ready", url=inference_url,
            note="Bearer token required; local callers only"),
        "gateway": ServiceSpec(
            "gateway", [*aion, *COMMANDS["gateway"]],
            env={**db_env, "AION_GATEWAY_HOST": host, "AION_GATEWAY_PORT": str(gateway_port),
                 "AION_LOCAL_LLM_URL": inference_url, "AION_INFERENCE_TOKEN": inference_token,
                 # `migrate` ran already; the gateway does not race it.
                 "AION_DB_MIGRATE_ON_START": "false"},
            health_url=f"http://{_connect_host(host)}:{gateway_port}/health",
            after=migrate_first, url=f"http://{_connect_host(host)}:{gateway_port}"),
        "scheduler": ServiceSpec("scheduler", [*aion, *COMMANDS["scheduler"]], env=db_env, after=migrate_first),
        "trainer": ServiceSpec(
            "trainer", [*aion, *COMMANDS["trainer"]],
            env={**db_env, "AION_LOCAL_LLM_URL": inference_url, "AION_INFERENCE_TOKEN": inference_token},
            # It loads the same base weights: let inference convert/cache them first.
            after=migrate_first + (("inference",) if "inference" in names else ())),
    }
    return [table[name] for name in names]


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)


def _configure_logging() -> None:
    """This process logs only the embedded database's start/stop; children log for themselves."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[db] %(message)s"))
    db_logger = logging.getLogger("shared.db")
    db_logger.addHandler(handler)
    db_logger.setLevel(logging.INFO)
    db_logger.propagate = False


def run(args: argparse.Namespace) -> int:
    from aion.cli import build_parser

    try:
        names = choose(args.services)
    except ValueError as exc:
        sys.stderr.write(f"aion up: {exc}\n")
        return 2
    available = subcommand_paths(build_parser())
    missing = [f"aion {' '.join(COMMANDS[n])}" for n in names if COMMANDS[n] not in available]
    if missing:
        sys.stderr.write(f"aion up: this installation has no {', '.join(missing)}; "
                         f"start a subset with --services (e.g. --services inference)\n")
        return 2
    busy = [f"{h}:{p}" for name, h, p in (("inference", "127.0.0.1", args.inference_port),
                                          ("gateway", args.host, args.gateway_port))
            if name in names and not _port_free(h, p)]
    if busy:
        sys.stderr.write(f"aion up: port already in use: {', '.join(busy)} "
                         f"(another AION? pass --gateway-port / --inference-port)\n")
        return 2

    from services.inference.settings import InferenceSettings

    # One token for this run unless the user set one: only our own gateway and trainer can call inference.
    token = InferenceSettings().inference_token or secrets.token_urlsafe(32)
    _configure_logging()
    database_url: str | None = None
    embedded_dir = None
    try:
        if NEEDS_DB & set(names):
            from shared.db.settings import DatabaseSettings

            db = DatabaseSettings()
            if not db.database_url:
                embedded_dir = db.embedded_postgres_dir()
            database_url = db.resolve_database_url()
        table = build_table(names, host=args.host, gateway_port=args.gateway_port,
                            inference_port=args.inference_port, database_url=database_url,
                            inference_token=token)
        supervisor = Supervisor(table, start_timeout=args.timeout, grace_s=args.grace)
        return supervisor.run()
    finally:
        if embedded_dir is not None:
            from shared.db.embedded import stop_embedded_postgres

            stop_embedded_postgres(embedded_dir)
