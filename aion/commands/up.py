"""`aion up` — the whole stack on one machine, no Docker: each service a child process of this one.

Postgres is the embedded one (started in this process, stopped after the children) unless
DATABASE_URL is set; migrations run once (`aion db upgrade`) before the gateway, scheduler and
trainer start. Logs come out prefixed (`[gateway] ...`); Ctrl-C stops everything. See aion/supervisor.py
for the stop and crash policy.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    p.add_argument("--demo", action="store_true",
                   help="once the stack is ready, ingest the sample documents and ask a question (`aion demo`)")
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


def user_set(name: str, env_file: Path = Path(".env")) -> bool:
    """Whether the user chose a value for `name`, in the environment or in `.env` (children read both)."""
    if name in os.environ:
        return True
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    return env_file.is_file() and dotenv_values(env_file).get(name) is not None


def inference_token() -> str:
    """The user's AION_INFERENCE_TOKEN, or a fresh one for this run: only our own gateway and trainer
    (which get it) can call the inference service, not any other process on the machine."""
    from services.inference.settings import InferenceSettings

    return InferenceSettings().inference_token or secrets.token_urlsafe(32)


def _loopback(host: str) -> bool:
    """The gateway's own rule for where AION_AUTH=off is allowed (GatewaySettings.binds_loopback)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def gateway_auth_env(host: str) -> dict[str, str]:
    """AION_AUTH=off for a gateway only this machine can reach, unless the user chose a mode.

    A fresh `aion up` has no API keys yet, so auth on would lock the user out of their own stack;
    the gateway itself refuses auth off on any other address, so nothing is opened to the network.
    """
    if _loopback(host) and not user_set("AION_AUTH"):
        return {"AION_AUTH": "off"}
    return {}


def active_adapter_link() -> Path:
    """AION_ADAPTER_DIR as the trainer and the gateway resolve it: the link to the active adapter."""
    from trainer.worker_settings import WorkerSettings

    return WorkerSettings().active_adapter_link().resolve()


def build_table(names: Sequence[str], *, host: str, gateway_port: int, inference_port: int,
                database_url: str | None, inference_token: str, adapter_link: Path | None = None,
                gateway_env: Mapping[str, str] | None = None) -> list[ServiceSpec]:
    """The service table for the chosen names (see `choose`)."""
    aion = [sys.executable, "-m", "aion"]
    # One path for all three: the trainer points it at each adapter it promotes, the gateway re-points it
    # on rollback, and inference serves it from start-up, so a restart keeps serving the active adapter.
    adapter_env = {"AION_ADAPTER_DIR": str(adapter_link)} if adapter_link is not None else {}
    inference_url = f"http://127.0.0.1:{inference_port}"
    db_env = {"DATABASE_URL": database_url} if database_url else {}
    migrate_first = ("migrate",) if "migrate" in names else ()
    table: dict[str, ServiceSpec] = {
        "migrate": ServiceSpec("migrate", [*aion, *COMMANDS["migrate"]], env=db_env, oneshot=True),
        "inference": ServiceSpec(
            "inference", [*aion, *COMMANDS["inference"]],
            env={"AION_HOST": "127.0.0.1", "AION_PORT": str(inference_port),
                 "AION_INFERENCE_TOKEN": inference_token, **adapter_env},
            health_url=f"{inference_url}/health", ready_status="ready", url=inference_url,
            note="Bearer token required; local callers only"),
        "gateway": ServiceSpec(
            "gateway", [*aion, *COMMANDS["gateway"]],
            env={**db_env, "AION_GATEWAY_HOST": host, "AION_GATEWAY_PORT": str(gateway_port),
                 "AION_LOCAL_LLM_URL": inference_url, "AION_INFERENCE_TOKEN": inference_token,
                 # `migrate` ran already; the gateway does not race it.
                 "AION_DB_MIGRATE_ON_START": "false", **adapter_env, **(gateway_env or {})},
            health_url=f"http://{_connect_host(host)}:{gateway_port}/health",
            after=migrate_first, url=f"http://{_connect_host(host)}:{gateway_port}"),
        "scheduler": ServiceSpec("scheduler", [*aion, *COMMANDS["scheduler"]], env=db_env, after=migrate_first),
        "trainer": ServiceSpec(
            "trainer", [*aion, *COMMANDS["trainer"]],
            env={**db_env, "AION_LOCAL_LLM_URL": inference_url, "AION_INFERENCE_TOKEN": inference_token,
                 **adapter_env},
            # It loads the same base weights: let inference convert/cache them first.
            after=migrate_first + (("inference",) if "inference" in names else ())),
    }
    return [table[name] for name in names]


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)


def _configure_logging(width: int) -> None:
    """This process logs only the embedded database's start/stop; children log for themselves.
    `width`: the longest service name, so `[db]` lines line up with the supervisor's."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[db]".ljust(width + 2) + " %(message)s"))
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

    token = inference_token()
    _configure_logging(max(len(n) for n in names))
    database_url: str | None = None
    embedded_dir = None
    try:
        if NEEDS_DB & set(names):
            from shared.db.settings import DatabaseSettings

            db = DatabaseSettings()
            if not db.database_url:
                embedded_dir = db.embedded_postgres_dir()
            try:
                database_url = db.resolve_database_url()
            except Exception as exc:  # the package raises several kinds; all mean "no database"
                where = f"; its log is in {embedded_dir / 'log'}" if embedded_dir else ""
                sys.stderr.write(f"aion up: PostgreSQL is not reachable: {type(exc).__name__}: {exc}{where}\n")
                return 1
        gateway_env = gateway_auth_env(args.host) if "gateway" in names else {}
        table = build_table(names, host=args.host, gateway_port=args.gateway_port,
                            inference_port=args.inference_port, database_url=database_url,
                            inference_token=token, adapter_link=active_adapter_link(), gateway_env=gateway_env)
        supervisor = Supervisor(table, start_timeout=args.timeout, grace_s=args.grace)
        return supervisor.run(on_ready=lambda sup: _on_ready(sup, args, names, embedded_dir, gateway_env))
    finally:
        if embedded_dir is not None:
            from shared.db.embedded import stop_embedded_postgres

            stop_embedded_postgres(embedded_dir)
            db_log = logging.getLogger("shared.db")
            if (embedded_dir / "postmaster.pid").exists():
                db_log.info("embedded PostgreSQL still used by another AION process; it stops when that one exits")
            else:
                db_log.info("embedded PostgreSQL stopped (data kept in %s)", embedded_dir)


def _on_ready(sup: Supervisor, args: argparse.Namespace, names: Sequence[str], embedded_dir: Path | None,
              gateway_env: Mapping[str, str]) -> None:
    """After the banner: where the data is, whether auth is off, what to try; the demo if asked."""
    if embedded_dir is not None:
        sup.say(f"  {'postgres'.ljust(sup.width)}  embedded, data in {embedded_dir}")
    if "gateway" not in names:
        return
    url = f"http://{_connect_host(args.host)}:{args.gateway_port}"
    if gateway_env.get("AION_AUTH") == "off":
        sup.say(f"auth is OFF: the gateway listens on {args.host} only and lets every local caller in.")
        sup.say("  to turn it on: `aion keys create --name me --role admin`, then restart with AION_AUTH=on "
                "(and AION_API_KEY=<key> for the aion commands)")
    if args.demo:
        # In a thread: the supervisor keeps watching the children (and Ctrl-C) while the demo runs.
        threading.Thread(target=_demo, args=(sup, url), daemon=True, name="demo").start()
    else:
        default = url == "http://127.0.0.1:3000"
        prefix = "" if default else f"AION_GATEWAY_URL={url} "
        sup.say(f"try it: {prefix}aion demo   (API docs: {url}/docs)")


def _demo(sup: Supervisor, url: str) -> None:
    from aion.commands.demo import DEFAULT_QUESTION, run_demo

    # Once the stack is stopping, the demo's requests fail; those lines would only confuse.
    out = _LineWriter(lambda line: None if sup.stopping else sup.say(line, name="demo"))
    status = run_demo(url, DEFAULT_QUESTION, 300.0, out)
    out.flush()
    if status != 0 and not sup.stopping:
        sup.say("the demo failed (see above); the stack keeps running", name="demo")


class _LineWriter:
    """A file-like object that hands each complete line to `emit` (the supervisor's prefixed output)."""

    def __init__(self, emit) -> None:
        self._emit, self._buffer = emit, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = ""
