"""API keys on the real gateway: who gets in, with which role, for which tenant; keys stored hashed."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute

from services.gateway.auth import policy, repository
from services.gateway.main import create_app
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import gateway_settings, running_gateway, upload

from .conftest import bearer, create_key, dead_inference_url

# What a `user` key may call (the issue: chat, search, feedback; reading documents; its own
# conversations). All else is admin.
USER_ROUTES = {
    ("POST", "/api/ai/chat"), ("GET", "/api/ai/chat/stream"), ("POST", "/api/ai/chat/stream"),
    # The chat page's length limit and the models a conversation may choose.
    ("GET", "/api/ai/chat/options"),
    # A key (or a token) exchanged for a short-lived token: what the pages keep instead of the key.
    ("POST", "/api/auth/token"),
    ("POST", "/v1/chat/completions"), ("POST", "/api/ai/search"), ("POST", "/api/ai/feedback"),
    ("GET", "/api/ai/documents"), ("GET", "/api/ai/documents/{document_id}"),
    ("GET", "/api/ai/conversations"), ("GET", "/api/ai/conversations/{conversation_id}"),
    ("PATCH", "/api/ai/conversations/{conversation_id}"), ("DELETE", "/api/ai/conversations/{conversation_id}"),
    # Images: a user makes them, sees the gallery and follows or stops a generation; deleting is admin's.
    ("POST", "/api/generate-image"), ("GET", "/api/images"), ("GET", "/api/images/{image_id}"),
    ("GET", "/api/images/{image_id}.png"), ("GET", "/api/images/jobs/{job_id}"),
    ("POST", "/api/images/jobs/{job_id}/cancel"),
}
# Reachable without a key: the health check, the page shells and their files, the API explorer.
OPEN_PATHS = {"/health", "/", "/admin", "/documents/{document_id}", "/static/{name}", "/static/vendor/{name}",
              "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: str(uuid.uuid4()) if m.group(0).endswith("id}") else "x", path)


def _all_routes(routes, prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers (FastAPI keeps those nested)."""
    out: list[tuple[str, set[str]]] = []
    for route in routes:
        if hasattr(route, "original_router"):
            out += _all_routes(route.original_router.routes, prefix + (route.include_context.prefix or ""))
        elif isinstance(route, APIRoute) or hasattr(route, "path"):
            out.append((prefix + route.path, set(getattr(route, "methods", None) or {"GET"})))
    return out


def _api_routes(app) -> list[tuple[str, str]]:
    return sorted((method, path) for path, methods in _all_routes(app.routes) for method in methods
                  if method != "HEAD")


def _message(response) -> str:
    return response.json()["error"]["message"]


def test_every_route_is_either_open_on_purpose_or_needs_a_key_and_the_right_role(clean_db):
    app = create_app(gateway_settings(clean_db, dead_inference_url(), AION_AUTH="on"))
    routes = _all_routes(app.routes)
    assert any(path == "/api/ai/chat" for path, _ in routes)  # the walk reaches included routers
    open_routes = {path for path, _ in routes if not policy.is_protected(path)}
    assert open_routes <= OPEN_PATHS, f"open without a key: {open_routes - OPEN_PATHS}"
    wrong = [(method, path, policy.required_role(method, _concrete(path)))
             for method, path in _api_routes(app) if policy.is_protected(path)
             and (policy.required_role(method, _concrete(path)) == "user") != ((method, path) in USER_ROUTES)]
    assert not wrong, f"role differs from the issue's split: {wrong}"


async def test_no_key_wrong_key_and_other_schemes_are_401_with_a_message(secure_gateway):
    async with secure_gateway() as client:
        r = await client.get("/api/ai/documents")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in _message(r) and "aion keys create" in _message(r)
        assert r.json()["error"]["type"] == "authentication_error"

        unknown = "aion_" + "A" * 43
        for headers in (bearer(unknown), bearer("not-a-key"), {"Authorization": "Basic dXNlcjpwYXNz"},
                        {"Authorization": "Bearer"}):
            r = await client.get("/api/ai/documents", headers=headers)
            assert r.status_code == 401, (headers, r.text)
        r = await client.get("/api/ai/documents", headers=bearer(unknown))
        assert "unknown or revoked" in _message(r) and r.json()["error"]["code"] == "invalid_api_key"

        # Open on purpose: the health check and the page shells (they call the API with a key).
        assert (await client.get("/health")).status_code in (200, 503)
        assert (await client.get("/openapi.json")).status_code == 200


async def test_every_protected_route_refuses_a_caller_without_key_and_a_user_key_where_admin_is_needed(
        secure_gateway):
    async with secure_gateway() as client:
        user = await create_key(client, role="user")
        for method, path in _api_routes(client.app):
            if not policy.is_protected(path):
                continue
            url = _concrete(path)
            r = await client.request(method, url)
            assert r.status_code == 401, (method, path, r.status_code)
            if (method, path) not in USER_ROUTES:
                r = await client.request(method, url, headers=bearer(user))
                assert r.status_code == 403, (method, path, r.status_code)
                assert "needs an admin key" in _message(r) and r.json()["error"]["type"] == "permission_error"


async def test_user_key_reads_and_admin_key_administers(secure_gateway):
    async with secure_gateway() as client:
        user, admin = await create_key(client, role="user"), await create_key(client, role="admin")
        assert (await client.get("/api/ai/documents", headers=bearer(user))).status_code == 200
        missing = f"/api/ai/documents/{uuid.uuid4()}"
        assert (await client.get(missing, headers=bearer(user))).status_code == 404
        assert (await client.delete(missing, headers=bearer(user))).status_code == 403
        assert (await client.delete(missing, headers=bearer(admin))).status_code == 404
        assert (await client.get("/api/ai/budget", headers=bearer(user))).status_code == 403
        assert (await client.get("/api/ai/budget", headers=bearer(admin))).status_code == 200
        r = await client.post("/api/ai/train/lora/start", headers=bearer(user), json={})
        assert r.status_code == 403
        r = await client.post("/api/ai/train/lora/start", headers=bearer(admin), json={"days": 1})
        assert r.status_code == 202 and r.json()["status"] == "queued"
        # The job was filed under the key's tenant.
        status = await client.get("/api/ai/train/lora/status", headers=bearer(admin))
        assert status.json()["tenant_id"] == "test-tenant"


async def test_revoked_key_is_refused_at_once_and_last_use_is_recorded(secure_gateway, clean_db):
    async with secure_gateway() as client:
        key = await create_key(client, role="admin", name="laptop")
        assert (await client.get("/api/ai/documents", headers=bearer(key))).status_code == 200
        with psycopg.connect(clean_db) as conn:
            assert conn.execute("SELECT last_used_at FROM api_keys WHERE name = 'laptop'").fetchone()[0] is not None
        async with client.app.state.gateway.sessions() as session:
            row = await repository.find(session, key[:13])
            assert row is not None and await repository.revoke(session, row)
            await session.commit()
        r = await client.get("/api/ai/documents", headers=bearer(key))
        assert r.status_code == 401 and "revoked" in _message(r)


async def test_keys_are_stored_hashed(secure_gateway, clean_db):
    async with secure_gateway() as client:
        key = await create_key(client, role="user", name="hashed")
    with psycopg.connect(clean_db) as conn:
        row = conn.execute("SELECT * FROM api_keys WHERE name = 'hashed'").fetchone()
        columns = [d.name for d in conn.execute("SELECT * FROM api_keys LIMIT 0").description]
    stored = dict(zip(columns, row, strict=True))
    assert all(key not in str(value) for value in stored.values())
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["key_prefix"] == key[:13] and len(key) == 48


async def test_the_tenant_comes_from_the_key_not_the_request(secure_gateway, inference_url):
    async with secure_gateway(inference_url=inference_url) as client:
        admin_a = await create_key(client, role="admin", tenant="tenant-a")
        admin_b = await create_key(client, role="admin", tenant="tenant-b")
        user_a = await create_key(client, role="user", tenant="tenant-a")
        doc = b"# Cofre\n\nO cofre da equipe B abre com a senha de girassol, trocada toda segunda-feira.\n"
        # A tenant field in the request is ignored: only the key decides.
        r = await client.post("/api/ai/documents", headers=bearer(admin_b), files=[upload("cofre.md", doc, "text/markdown")],
                              data={"tenant_id": "tenant-a"}, params={"tenant_id": "tenant-a"})
        assert r.status_code == 201, r.text
        doc_id = r.json()["results"][0]["document_id"]

        listed_b = (await client.get("/api/ai/documents", headers=bearer(admin_b))).json()
        assert [d["id"] for d in listed_b["items"]] == [doc_id]
        for key in (admin_a, user_a):
            assert (await client.get("/api/ai/documents", headers=bearer(key))).json()["total"] == 0
            assert (await client.get(f"/api/ai/documents/{doc_id}", headers=bearer(key))).status_code == 404
            found = await client.post("/api/ai/search", headers=bearer(key), json={"q": "senha do cofre"})
            assert found.status_code == 200 and found.json()["passages"] == []
        assert (await client.delete(f"/api/ai/documents/{doc_id}", headers=bearer(admin_a))).status_code == 404
        found = await client.post("/api/ai/search", headers=bearer(admin_b), json={"q": "senha do cofre"})
        assert found.json()["passages"][0]["document_id"] == doc_id


def test_auth_off_is_refused_unless_the_gateway_binds_loopback():
    for host in ("0.0.0.0", "192.168.1.10", "::", "gateway.example.com"):
        with pytest.raises(ValueError, match="AION_AUTH=off is for local development only"):
            GatewaySettings(_env_file=None, AION_AUTH="off", AION_GATEWAY_HOST=host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert GatewaySettings(_env_file=None, AION_AUTH="off", AION_GATEWAY_HOST=host).auth_enabled is False
    assert GatewaySettings(_env_file=None, AION_GATEWAY_HOST="0.0.0.0").auth_enabled is True


async def test_auth_off_on_loopback_lets_callers_in_as_the_configured_tenant_and_says_so(clean_db, caplog):
    caplog.set_level(logging.WARNING, logger="services.gateway")
    settings = gateway_settings(clean_db, dead_inference_url(), AION_AUTH="off", PRIMARY_TENANT_ID="dev-tenant")
    async with running_gateway(settings) as client:
        r = await client.post("/api/ai/train/lora/start", json={})
        assert r.status_code == 202
        status = await client.get("/api/ai/train/lora/status")
        assert status.json()["tenant_id"] == "dev-tenant"
    assert any("AION_AUTH=off: NO API KEYS ARE CHECKED" in rec.getMessage() for rec in caplog.records)


async def test_a_proxy_prefix_does_not_open_a_way_around_the_guard(clean_db):
    """Behind a proxy that mounts the gateway under a prefix (ASGI root_path), the same routes stay guarded."""
    app = create_app(gateway_settings(clean_db, dead_inference_url(), AION_AUTH="on"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path="/aion")
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for path in ("/aion/api/ai/llm/health", "/aion/api/ai/documents", "/aion/metrics"):
                r = await client.get(path)
                assert r.status_code == 401, (path, r.status_code)
