"""`aion up` and its supervisor: start, readiness, prefixed logs, clean stop, the active adapter kept
across a restart, crashes reported.

The end-to-end tests run `aion up --services inference` (the real model) as a separate process and
drive it with signals, as a terminal would; the supervisor tests use tiny stand-in services to cover
ordering, one-shot jobs and process-group cleanup in a second or two.
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from aion.commands import up
from aion.commands.demo import DEFAULT_QUESTION, run_demo, sample_documents
from aion.supervisor import ServiceSpec, Supervisor
from tests.fixtures.servers import REPO, base_env, free_port

TOKEN = "test-token-0123456789"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


class UpProcess:
    """`aion up` in its own session, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "aion", "up", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.stderr = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        stderr = ""
        if self.proc.poll() is not None and self.proc.stderr:
            stderr = "\nstderr:\n" + self.proc.stderr.read()
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]) + stderr)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.wait_for_eof()
        assert self.proc.stderr
        self.stderr = self.proc.stderr.read()
        return code

    def wait_for_eof(self) -> None:
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)

    def descendants(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            for pid in self.descendants():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    """A data dir outside pytest's basetemp: a concurrent pytest session on this machine prunes old
    basetemps, which would delete a running stack's Postgres cluster under it."""
    with tempfile.TemporaryDirectory(prefix="aion-up-test-") as path:
        yield Path(path)


def postmaster_pid(data_dir: Path) -> int:
    """The embedded Postgres server's pid: pg_ctl detaches it, so it is no descendant of `aion up`."""
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


@pytest.mark.e2e
@pytest.mark.slow
def test_up_runs_the_whole_stack_answers_with_citations_and_sigint_leaves_nothing(stack_dir: Path) -> None:
    gateway_port, inference_port = free_port(), free_port()
    data = stack_dir / "data"
    process = UpProcess(["--gateway-port", str(gateway_port), "--inference-port", str(inference_port),
                         "--grace", "15", "--timeout", "500", "--demo"],
                        # Short answers: the test checks the citations, not the prose, on a shared CPU.
                        base_env(data, AION_INFERENCE_TOKEN=TOKEN, AION_LOCAL_MAX_TOKENS="48"))
    try:
        process.wait_for(r"^\[up\]\s+all services are ready", timeout=540)
        # --demo: the samples are ingested and a question answered with sources, in the stack's output.
        process.wait_for(r"^\[demo\]\s+Sources:", timeout=300)
        process.wait_for(r"^\[demo\]\s+\[1\] says: ", timeout=30)
        text = "\n".join(process.lines)
        assert len(re.findall(r"^\[demo\]\s+created\s+aion-demo/", text, re.MULTILINE)) == len(sample_documents())
        for name in ("migrate", "inference", "gateway", "scheduler", "trainer"):
            assert re.search(rf"^\[{name}\]\s", text, re.MULTILINE), f"no prefixed output from {name}"
        assert re.search(rf"^\[up\]\s+gateway\s+http://127\.0\.0\.1:{gateway_port}$", text, re.MULTILINE)
        assert "auth is OFF" in text and "aion keys create --name me --role admin" in text

        # The token reaches inference: closed without it, open with it.
        inference = f"http://127.0.0.1:{inference_port}"
        assert httpx.get(f"{inference}/v1/models", timeout=10).status_code == 401
        assert httpx.get(f"{inference}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=10).status_code == 200

        gateway = f"http://127.0.0.1:{gateway_port}"
        # Ingestion dedups by content: a second run adds nothing.
        again = io.StringIO()
        assert run_demo(gateway, DEFAULT_QUESTION, 300.0, again) == 0, again.getvalue()
        statuses = re.findall(r"^(\w+)\s+aion-demo/", again.getvalue(), re.MULTILINE)
        assert statuses and set(statuses) == {"duplicate"}, again.getvalue()
        listed = httpx.get(f"{gateway}/api/ai/documents", timeout=10).json()
        assert sum(d["source_name"].startswith("aion-demo/") for d in listed["items"]) == len(sample_documents())

        answer = httpx.post(f"{gateway}/api/ai/chat", json={"message": "How long does a Pomelo battery charge last?"},
                            timeout=300).json()
        # The local model answered; where its words were not backed by the passages (which depends on the
        # CPU's arithmetic for a 135M model), the answer path quotes the passages instead.
        assert answer["text"].strip() and (answer["used"] == "local" or answer["answer"] == "quoted"), answer
        assert answer["sources"], answer
        assert answer["sources"][0]["title"] == "The Pomelo robot"
        assert "nine hours" in answer["sources"][0]["text"]

        # An adapter the trainer promoted (registered, then activated as promotion and rollback do).
        activate_an_adapter(data, gateway)
        assert served_by_default(inference) == "aion-v1"

        pids = [*process.descendants(), postmaster_pid(data)]
        process.proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        assert process.finish(timeout=90) == 0, process.stderr
    finally:
        process.kill()
    assert not wait_gone(pids), "a child (or the embedded Postgres) outlived `aion up`"
    stops = [m.group(1) for line in process.lines if (m := re.match(r"^\[up\]\s+stopping (\w+)", line))]
    assert stops == ["trainer", "scheduler", "gateway", "inference"], stops
    assert up._port_free("127.0.0.1", gateway_port) and up._port_free("127.0.0.1", inference_port)

    # Restarted, inference serves the active adapter from the start (AION_ADAPTER_DIR is the trainer's
    # link); then a crash of it is reported and stops the stack.
    again = UpProcess(["--services", "inference", "--inference-port", str(inference_port), "--grace", "15"],
                      base_env(data, AION_INFERENCE_TOKEN=TOKEN))
    try:
        again.wait_for(r"^\[up\]\s+all services are ready", timeout=600)
        assert httpx.get(f"{inference}/health", timeout=10).json()["adapter"] == "aion-v1"
        assert served_by_default(inference) == "aion-v1"
        (child,) = [p for p in psutil.Process(again.proc.pid).children() if "inference" in " ".join(p.cmdline())]
        child.send_signal(signal.SIGKILL)
        assert again.finish(timeout=60) == 1
    finally:
        again.kill()
    assert any("FAILED: inference was killed by SIGKILL while the stack was running" in line
               for line in again.lines), "\n".join(again.lines[-20:])
    assert "inference was killed by SIGKILL" in again.stderr


def activate_an_adapter(data: Path, gateway: str) -> None:
    """Write and register `aion-v1` as the trainer does, and make it the active one through the gateway."""
    import psycopg

    from shared.db.settings import DatabaseSettings
    from tests.fixtures.adapters import random_lora_adapters

    (folder,) = random_lora_adapters(data / "trainer" / "adapters", ["aion-v1"])
    settings = DatabaseSettings(_env_file=None, AION_DATA_DIR=str(data))
    try:
        with psycopg.connect(settings.resolve_database_url(), autocommit=True) as conn:
            conn.execute("INSERT INTO adapters (id, tenant_id, name, path, base_model, status) "
                         "VALUES (gen_random_uuid(), 'default', 'aion-v1', %s, 'smollm2-135m-instruct', 'candidate')",
                         (str(folder),))
    finally:
        settings.release_database()
    r = httpx.post(f"{gateway}/api/ai/adapters/aion-v1/activate", timeout=300)
    assert r.status_code == 200, r.text
    assert (data / "trainer" / "adapters" / "active").resolve() == folder.resolve()


def served_by_default(inference: str) -> str:
    """The model that answers a request for `default` (what the gateway asks for)."""
    r = httpx.post(f"{inference}/v1/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
                   json={"model": "default", "max_tokens": 4, "temperature": 0,
                         "messages": [{"role": "user", "content": "Hello"}]})
    assert r.status_code == 200, r.text
    return r.json()["model"]


@pytest.mark.slow
def test_a_service_that_fails_to_start_is_reported(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path / "data", AION_BASE_MODEL=str(tmp_path / "no-such-model"))
    process = UpProcess(["--services", "inference", "--inference-port", str(port)], env)
    try:
        assert process.finish(timeout=300) == 1
    finally:
        process.kill()
    assert any("FAILED: inference failed to start" in line for line in process.lines), "\n".join(process.lines)


# ---- the command's own checks --------------------------------------------------------------------


def test_service_selection() -> None:
    assert up.choose("inference") == ["inference"]
    assert up.choose("gateway,inference") == ["migrate", "inference", "gateway"]
    assert up.choose("inference,gateway,scheduler,trainer") == ["migrate", *up.SERVICES]
    with pytest.raises(ValueError):
        up.choose("inference,bogus")


def test_table_wires_ports_token_and_order() -> None:
    table = {s.name: s for s in up.build_table(["migrate", *up.SERVICES], host="0.0.0.0", gateway_port=3100,
                                               inference_port=8100, database_url="postgresql://x/aion",
                                               inference_token="t", adapter_link=Path("/d/trainer/adapters/active"))}
    assert table["migrate"].oneshot and table["migrate"].argv[-2:] == ["db", "upgrade"]
    assert table["gateway"].after == ("migrate",)
    assert set(table["trainer"].after) == {"migrate", "inference"}
    assert table["gateway"].env["AION_LOCAL_LLM_URL"] == table["trainer"].env["AION_LOCAL_LLM_URL"] == \
        "http://127.0.0.1:8100"
    assert table["gateway"].health_url == "http://127.0.0.1:3100/health"
    assert {table[n].env["AION_INFERENCE_TOKEN"] for n in ("inference", "gateway", "trainer")} == {"t"}
    assert all(table[n].env.get("DATABASE_URL") == "postgresql://x/aion" for n in ("migrate", "gateway",
                                                                                   "scheduler", "trainer"))
    assert "DATABASE_URL" not in table["inference"].env
    # Inference serves from start-up the link the trainer points at each promoted adapter (and the gateway
    # re-points on rollback): a restarted stack keeps serving the active adapter.
    assert {table[n].env["AION_ADAPTER_DIR"] for n in ("inference", "gateway", "trainer")} == {
        "/d/trainer/adapters/active"}


def test_the_adapter_link_is_where_the_trainer_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.worker_settings import WorkerSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AION_DATA_DIR", "rel-data")
    monkeypatch.delenv("AION_ADAPTER_DIR", raising=False)
    monkeypatch.delenv("AION_TRAIN_ROOT", raising=False)
    assert up.active_adapter_link() == tmp_path / "rel-data" / "trainer" / "adapters" / "active"
    assert up.active_adapter_link() == WorkerSettings().active_adapter_link().resolve()
    monkeypatch.setenv("AION_ADAPTER_DIR", str(tmp_path / "mine"))
    assert up.active_adapter_link() == tmp_path / "mine"


def test_vllm_backend_table_chat_on_vllm_embeddings_on_inference() -> None:
    names = up.choose(None, "vllm")
    assert names == ["migrate", "prepare", "inference", "vllm", "gateway", "scheduler", "trainer"]
    plan = up.VllmPlan(python="/opt/vllm/bin/python", model="/data/models/smollm2-135m-instruct",
                       served_name="smollm2-135m-instruct", port=8100, args=("--enable-lora",))
    table = {s.name: s for s in up.build_table(names, host="127.0.0.1", gateway_port=3100, inference_port=8108,
                                               database_url=None, inference_token="t", vllm=plan)}
    # The GGUF is converted once before vLLM (and the trainer) load the folder.
    assert table["prepare"].oneshot and table["prepare"].argv[-2:] == ["inference", "--convert-only"]
    assert table["vllm"].after == ("prepare",) and set(table["trainer"].after) == {"migrate", "prepare"}
    vllm = table["vllm"]
    assert vllm.argv[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    argv = " ".join(vllm.argv)
    assert "--model /data/models/smollm2-135m-instruct" in argv and "--served-model-name smollm2-135m-instruct" in argv
    assert "--port 8100" in argv and argv.endswith("--enable-lora") and "t" not in vllm.argv  # token not in argv
    assert vllm.env["VLLM_API_KEY"] == "t" and vllm.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert vllm.health_url == "http://127.0.0.1:8100/health" and vllm.ready_status is None
    assert table["inference"].argv[-2:] == ["inference", "--embeddings-only"]
    for name in ("gateway", "trainer"):
        env = table[name].env
        assert env["AION_INFERENCE_BACKEND"] == "vllm" and env["AION_LOCAL_LLM_URL"] == "http://127.0.0.1:8100"
    assert table["gateway"].env["AION_EMBEDDINGS_URL"] == "http://127.0.0.1:8108"
    # Every command the table runs parses as a real `aion` command line.
    from aion.cli import build_parser

    parser = build_parser()
    for spec in table.values():
        if spec.argv[1:3] == ["-m", "aion"]:
            parser.parse_args(list(spec.argv[3:]))
    with pytest.raises(ValueError, match="--backend vllm"):
        up.choose("inference,vllm")


def test_vllm_backend_without_vllm_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .venv-vllm here
    assert _run_up(["--backend", "vllm"]) == 2
    assert "make vllm" in capsys.readouterr().err
    assert _run_up(["--backend", "vllm", "--vllm-python", sys.executable]) == 2
    assert "has no vLLM installed" in capsys.readouterr().err


def test_gateway_auth_is_off_only_on_loopback_and_only_when_the_user_chose_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("AION_AUTH", raising=False)
    assert up.gateway_auth_env("127.0.0.1") == {"AION_AUTH": "off"}
    assert up.gateway_auth_env("localhost") == up.gateway_auth_env("::1") == {"AION_AUTH": "off"}
    assert up.gateway_auth_env("0.0.0.0") == up.gateway_auth_env("192.168.1.10") == {}
    (tmp_path / ".env").write_text("AION_AUTH=on\n")
    assert up.gateway_auth_env("127.0.0.1") == {}
    (tmp_path / ".env").unlink()
    monkeypatch.setenv("AION_AUTH", "on")
    assert up.gateway_auth_env("127.0.0.1") == {}
    table = {s.name: s for s in up.build_table(["gateway"], host="127.0.0.1", gateway_port=1, inference_port=2,
                                               database_url=None, inference_token="t",
                                               gateway_env={"AION_AUTH": "off"})}
    assert table["gateway"].env["AION_AUTH"] == "off"


def test_inference_token_is_the_users_or_fresh_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AION_INFERENCE_TOKEN", raising=False)
    first, second = up.inference_token(), up.inference_token()
    assert first != second and len(first) >= 32
    monkeypatch.setenv("AION_INFERENCE_TOKEN", TOKEN)
    assert up.inference_token() == TOKEN


def test_demo_ships_a_few_distinct_documents_and_explains_an_unreachable_gateway() -> None:
    docs = sample_documents()
    assert 3 <= len(docs) <= 5
    assert len({data for _, data in docs}) == len(docs) and all(n.startswith("aion-demo/") for n, _ in docs)
    out = io.StringIO()
    assert run_demo(f"http://127.0.0.1:{free_port()}", DEFAULT_QUESTION, 5.0, out) == 2
    assert "not reachable" in out.getvalue() and "aion up" in out.getvalue()


def test_demo_output_is_prefixed_line_by_line() -> None:
    lines: list[str] = []
    writer = up._LineWriter(lines.append)
    writer.write("one\ntw")
    writer.write("o\nthree")
    assert lines == ["one", "two"]
    writer.flush()
    assert lines == ["one", "two", "three"]


def _run_up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    args = parser.parse_args(["up", *argv])
    return args.func(args)


def test_up_refuses_services_this_installation_lacks(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import aion.cli

    def only_inference() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.add_subparsers().add_parser("inference")
        return parser

    monkeypatch.setattr(aion.cli, "build_parser", only_inference)
    assert _run_up(["--services", "inference,gateway"]) == 2
    assert "this installation has no aion db upgrade, aion gateway" in capsys.readouterr().err
    assert _run_up(["--services", "bogus"]) == 2


def test_up_refuses_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert _run_up(["--services", "inference", "--inference-port", str(s.getsockname()[1])]) == 2
    assert "port already in use" in capsys.readouterr().err


# ---- the supervisor with stand-in services -------------------------------------------------------

HTTP_SERVICE = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            print(f'"GET {self.path} HTTP/1.1" 200', flush=True)  # an access log line, as uvicorn writes
            self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers()
            self.wfile.write(b'{"status": "ready"}')
        def log_message(self, *a): pass
    print("listening", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")

# Starts a grandchild that ignores SIGTERM: only the process-group SIGKILL ends it.
STUBBORN_SERVICE = textwrap.dedent("""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    print("worker up", flush=True)
    while True:
        time.sleep(1)
""")


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_supervisor_orders_starts_and_kills_whole_process_groups() -> None:
    port = free_port()
    out = io.StringIO()
    specs = [
        ServiceSpec("migrate", py("print('migrated')"), oneshot=True),
        ServiceSpec("web", py(HTTP_SERVICE, str(port)), health_url=f"http://127.0.0.1:{port}/health",
                    ready_status="ready", after=("migrate",), url=f"http://127.0.0.1:{port}"),
        ServiceSpec("worker", py(STUBBORN_SERVICE), after=("web",), settle_s=0.5),
    ]
    supervisor = Supervisor(specs, out=out, grace_s=1.0, poll_s=0.05, color=False)
    seen: list[int] = []

    def on_ready(sup: Supervisor) -> None:
        httpx.get(f"http://127.0.0.1:{port}/other", timeout=5)
        for proc in sup.children:
            if proc.poll() is None:
                seen.extend([proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))])
        threading.Timer(0.2, sup.request_stop).start()

    assert supervisor.run(on_ready=on_ready) == 0
    text = out.getvalue()
    assert len(seen) == 3, text  # web, worker and the worker's stubborn grandchild
    assert not wait_gone(seen, 5), f"survivors: {seen}\n{text}"
    lines = text.splitlines()
    order = [line for line in lines if re.match(r"^\[up\]\s+started", line)]
    assert [re.search(r"started (\w+)", line).group(1) for line in order] == ["migrate", "web", "worker"]
    assert "[migrate] migrated" in lines and "[worker]  worker up" in lines
    # The supervisor's own health probes are kept out of the log; every other request shows.
    assert '[web]     "GET /other HTTP/1.1" 200' in lines
    assert "/health" not in text
    assert any(re.match(rf"^\[up\]\s+web\s+http://127\.0\.0\.1:{port}$", line) for line in lines)


def test_supervisor_reports_a_crash_and_exits_nonzero() -> None:
    out = io.StringIO()
    specs = [ServiceSpec("steady", py("import time; time.sleep(60)"), settle_s=0.2),
             ServiceSpec("flaky", py("import sys, time; print('about to fail', flush=True); time.sleep(0.8); "
                                     "sys.exit(3)"), settle_s=0.2)]
    started = time.monotonic()
    assert Supervisor(specs, out=out, grace_s=2.0, poll_s=0.05, color=False).run() == 1
    assert time.monotonic() - started < 20
    text = out.getvalue()
    assert "[flaky]  about to fail" in text
    assert "FAILED: flaky exited with status 3 while the stack was running" in text
    assert re.search(r"stopping steady", text)


def test_supervisor_stops_at_a_failed_oneshot() -> None:
    out = io.StringIO()
    specs = [ServiceSpec("migrate", py("import sys; print('no database'); sys.exit(2)"), oneshot=True),
             ServiceSpec("web", py("import time; time.sleep(60)"), after=("migrate",))]
    assert Supervisor(specs, out=out, poll_s=0.05, color=False).run() == 1
    text = out.getvalue()
    assert "FAILED: migrate exited with status 2 before it was ready" in text
    assert "started web" not in text


def test_supervisor_rejects_a_bad_table() -> None:
    with pytest.raises(ValueError, match="unknown"):
        Supervisor([ServiceSpec("a", ["true"], after=("b",))])
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([ServiceSpec("a", ["true"]), ServiceSpec("a", ["true"])])
