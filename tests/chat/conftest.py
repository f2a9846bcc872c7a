"""Chat tests: the real gateway on a real uvicorn, the real inference service, a real Postgres, and a
small OpenAI-protocol stand-in for the fallback's failure cases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from services.gateway.auth.keys import generate_key
from services.gateway.main import create_app
from tests.fixtures.openai_standin import StandIn, run_standin
from tests.fixtures.servers import free_port, run_asgi
from tests.gateway.conftest import gateway_settings, kb_files

TENANT = "test-tenant"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with run_standin() as server:
        yield server


def new_key(db: str, role: str) -> str:
    """A key stored as `aion keys create` stores it; returns the secret."""
    key = generate_key()
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO api_keys (id, name, role, tenant_id, key_prefix, key_hash) "
                     "VALUES (%s, %s, %s, %s, %s, %s)",
                     (uuid.uuid4(), f"{role}-{key.prefix}", role, TENANT, key.prefix, key.hash))
    return key.key


@contextmanager
def _gateway(db: str, inference: str, overrides: dict[str, Any]) -> Iterator[str]:
    settings = gateway_settings(db, inference, **overrides)
    headers = {"Authorization": f"Bearer {new_key(db, 'admin')}"} if settings.auth_enabled else {}
    with run_asgi(create_app(settings)) as url:
        r = httpx.post(f"{url}/api/ai/documents", files=kb_files(), headers=headers, timeout=120)
        assert r.status_code in (200, 201) and r.json()["ingested"] == 4, r.text
        yield url


@pytest.fixture
def chat_gateway(clean_db: str, inference_url: str, standin: StandIn) -> Callable[..., Any]:
    """`with chat_gateway(**env) as url:` — a gateway on an empty DB with the test corpus ingested.

    By default the fallback is the project's own inference service under another model name
    (the base weights), reached through the OpenAI protocol like any paid provider."""
    standin.calls.clear()

    def factory(**overrides: Any):
        env = {"AION_FALLBACK_BASE_URL": f"{inference_url}/v1", "AION_FALLBACK_MODEL": "smollm2-135m-instruct",
               "OPENAI_API_KEY": "test-key", "AION_BUDGET_USD": 5.0, "AION_FALLBACK_SHARE_MIN_ANSWERS": 1000,
               "AION_LOCAL_MAX_TOKENS": 48, "AION_FALLBACK_MAX_TOKENS": 48, "AION_LOCAL_TEMPERATURE": 0,
               "AION_FALLBACK_TEMPERATURE": 0,
               # Off unless a test turns it on (test_trust.py): routing by C and the budget must not
               # hang on whether the small model's words happen to be backed by the passages.
               "AION_SUPPORT_THRESHOLD": 0}
        env.update(overrides)
        return _gateway(clean_db, inference_url, env)
    return factory


def sse(url: str, path: str, *, method: str = "GET",
        on_event: Callable[[list[tuple[str, dict]]], None] | None = None, **kwargs: Any) -> list[tuple[str, dict]]:
    """Every SSE event of a stream, parsed; `on_event` sees the list so far after each one arrives."""
    events: list[tuple[str, dict]] = []
    with httpx.stream(method, url + path, timeout=120, **kwargs) as r:
        assert r.status_code == 200, r.read()
        name = "message"
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
                if on_event is not None:
                    on_event(events)
    return events


def answer_events(db: str, request_id: str | None = None) -> list[dict]:
    with psycopg.connect(db) as conn:
        query = "SELECT request_id, value, meta FROM ai_events WHERE kind = 'answer'"
        params: tuple = ()
        if request_id:
            query += " AND request_id = %s"
            params = (request_id,)
        return [{"request_id": r[0], "value": r[1], **r[2]} for r in conn.execute(query, params).fetchall()]


def ledger_rows(db: str) -> list[dict]:
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT status, reserved_usd, cost_usd, usage_estimated FROM fallback_ledger").fetchall()
    return [{"status": r[0], "reserved": r[1], "cost": r[2], "estimated": r[3]} for r in rows]


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"
