"""Postgres restarted under traffic: 503 + Retry-After during the gap, then recovery with no gateway restart."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx
import pytest

from services.gateway.main import create_app
from shared.db import migrate
from shared.db.embedded import ensure_embedded_postgres
from tests.faults.conftest import NO_RATE_LIMITS, start_postgres, stop_postgres_fast
from tests.fixtures.servers import run_asgi
from tests.gateway.conftest import gateway_settings, kb_files

# Routes that need the database on every call: the panel, the document list, a search, a chat answer.
TRAFFIC = [
    ("GET", "/api/ai/metrics", {"params": {"days": 1}}),
    ("GET", "/api/ai/documents", {}),
    ("POST", "/api/ai/search", {"json": {"q": "greenhouse roof vents"}}),
    ("POST", "/api/ai/chat", {"json": {"message": "When do the greenhouse roof vents open?"}}),
]


@dataclass
class Traffic:
    """Clients calling the gateway in a loop; records every answer with the phase it was sent in."""

    url: str
    phase: str = "before"
    results: list[tuple[str, str, int, str | None, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    saw_outage: threading.Event = field(default_factory=threading.Event)
    recovered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = offset
            while not self.stop.is_set():
                method, path, kwargs = TRAFFIC[i % len(TRAFFIC)]
                i += 1
                phase = self.phase
                r = client.request(method, path, **kwargs)
                code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
                with self.lock:
                    self.results.append((phase, path, r.status_code, r.headers.get("retry-after"), code))
                    refused = {p for ph, p, s, *_ in self.results if ph == "down" and s == 503}
                    if len(refused) == len(TRAFFIC):  # every route has met the outage
                        self.saw_outage.set()
                    if phase == "restarted" and r.status_code == 200:
                        self.recovered.set()


@pytest.mark.slow
def test_postgres_restart_gives_503_then_recovers(pg_tmp_path, inference_url) -> None:
    pgdata = pg_tmp_path / "pg"
    db = ensure_embedded_postgres(pgdata, database="aion_fault")
    migrate.upgrade(db)
    settings = gateway_settings(db, inference_url, AION_LOCAL_MAX_TOKENS=4, AION_DB_CONNECT_TIMEOUT=2,
                                **NO_RATE_LIMITS)
    with run_asgi(create_app(settings)) as url:
        assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=120).status_code in (200, 201)
        traffic = Traffic(url)
        clients = [threading.Thread(target=traffic.run, args=(n,), daemon=True) for n in range(3)]
        for c in clients:
            c.start()
        try:
            traffic.phase = "down"
            stop_postgres_fast(pgdata)
            assert traffic.saw_outage.wait(60), f"no 503 while Postgres was down: {traffic.results[-10:]}"
            start_postgres(pgdata)
            traffic.phase = "restarted"
            assert traffic.recovered.wait(60), f"no recovery after the restart: {traffic.results[-10:]}"
            # Every route works again, on the same gateway process.
            with httpx.Client(base_url=url, timeout=60) as client:
                after = {path: client.request(method, path, **kw).status_code for method, path, kw in TRAFFIC}
        finally:
            traffic.stop.set()
            for c in clients:
                c.join(60)

    # A request either succeeds or gets a 503 it can retry (never a 500), from the first cut connection on.
    assert all(r[2] in (200, 503) for r in traffic.results), [r for r in traffic.results if r[2] not in (200, 503)]
    refused = [r for r in traffic.results if r[2] == 503]
    assert all(r[3] and r[4] for r in refused), [r for r in refused if not (r[3] and r[4])]
    assert {r[1] for r in refused} == {path for _, path, _ in TRAFFIC}, refused
    assert after == {path: 200 for _, path, _ in TRAFFIC}, after
