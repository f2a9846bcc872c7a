"""deploy/healthcheck.py: the probe every AION image and compose service uses."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.stack.helpers import REPO

spec = importlib.util.spec_from_file_location("aion_healthcheck", REPO / "deploy" / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


class _Handler(BaseHTTPRequestHandler):
    replies: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code, body = self.replies.get(self.path, (404, b"{}"))
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    _Handler.replies = {
        "/ready": (200, json.dumps({"status": "ready"}).encode()),
        "/loading": (200, json.dumps({"status": "loading"}).encode()),
        "/plain": (200, b"ok"),
        "/down": (503, b"{}"),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_probe(server: str) -> None:
    assert healthcheck.main(["http", f"{server}/ready", "--json-status", "ready"]) == 0
    assert healthcheck.main(["http", f"{server}/plain"]) == 0
    assert healthcheck.main(["http", f"{server}/loading", "--json-status", "ready"]) == 1
    assert healthcheck.main(["http", f"{server}/plain", "--json-status", "ready"]) == 1
    assert healthcheck.main(["http", f"{server}/down"]) == 1


def test_http_probe_when_nothing_listens() -> None:
    assert healthcheck.main(["--timeout", "1", "http", "http://127.0.0.1:9/health"]) == 1


def test_port_follows_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.rsplit(":", 1)[1]
    monkeypatch.setenv("AION_PORT", port)
    assert healthcheck.main(["http", "http://127.0.0.1:${AION_PORT:-1}/ready", "--json-status", "ready"]) == 0
    monkeypatch.delenv("AION_PORT")
    assert healthcheck.expand("http://h:${AION_PORT:-8008}/x${NOPE}") == "http://h:8008/x"


def test_db_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert healthcheck.main(["db"]) == 1
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://aion:x@127.0.0.1:9/aion")
    assert healthcheck.main(["--timeout", "1", "db"]) == 1


def test_db_probe_against_a_real_postgres(postgres_cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_cluster_url)
    assert healthcheck.main(["db"]) == 0
