"""Security tests: the real gateway app with AION_AUTH=on over HTTP (httpx ASGITransport, lifespan run
for real) on the session's Postgres; keys are created with the same repository `aion keys` uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.gateway.auth import repository
from services.gateway.auth.keys import generate_key
from tests.fixtures.servers import free_port
from tests.gateway.conftest import gateway_settings, running_gateway


def dead_inference_url() -> str:
    """Most security checks never reach the model: a closed port keeps them from waiting for it."""
    return f"http://127.0.0.1:{free_port()}"


async def create_key(client: httpx.AsyncClient, *, role: str = "user", tenant: str = "test-tenant",
                     name: str | None = None) -> str:
    """A new key in the gateway's database; returns the secret, as `aion keys create` prints it."""
    new_key = generate_key()
    async with client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        await repository.create(session, name=name or f"{role}-{new_key.prefix}", role=role, tenant_id=tenant,
                                new_key=new_key)
        await session.commit()
    return new_key.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secure_gateway(clean_db: str) -> Callable[..., Any]:
    """`async with secure_gateway(**env) as client:` — AION_AUTH=on, empty database, no model behind it."""
    @asynccontextmanager
    async def factory(inference_url: str | None = None, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = gateway_settings(clean_db, inference_url or dead_inference_url(), **{"AION_AUTH": "on", **overrides})
        async with running_gateway(settings) as client:
            yield client
    return factory
