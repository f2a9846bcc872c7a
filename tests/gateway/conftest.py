"""Gateway tests: the real app in-process (httpx ASGITransport, lifespan run for real) on the session's
embedded Postgres and the real inference service (MiniLM embeddings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings

KB_DIR = Path(__file__).resolve().parents[1] / "data" / "kb"


def gateway_settings(database_url: str, inference_url: str, **overrides: Any) -> GatewaySettings:
    # Auth off (allowed: the test gateways bind 127.0.0.1); tests/security turns it on.
    values = {"DATABASE_URL": database_url, "AION_LOCAL_LLM_URL": inference_url,
              "AION_DB_MIGRATE_ON_START": False, "PRIMARY_TENANT_ID": "test-tenant", "AION_AUTH": "off"}
    values.update(overrides)
    return GatewaySettings(**values)


@asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]  # tests reach app.state.gateway through it
            yield client


@pytest.fixture
def make_gateway(clean_db: str, inference_url: str) -> Callable[..., Any]:
    """`async with make_gateway(**env_overrides) as client:` — a gateway on an empty database."""
    def factory(**overrides: Any):
        return running_gateway(gateway_settings(clean_db, inference_url, **overrides))
    return factory


@pytest.fixture
async def gateway(make_gateway: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with make_gateway() as client:
        yield client


def kb_files(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart entries for files of the shipped corpus (all of it when no names are given)."""
    paths = [KB_DIR / n for n in names] if names else sorted(KB_DIR.glob("*.md"))
    return [("files", (p.name, p.read_bytes(), "text/markdown")) for p in paths]


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> tuple[str, tuple]:
    return ("files", (name, data, content_type))
