"""Rate limits, body size caps, CORS and security headers on the real gateway app."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import gateway_settings, running_gateway, upload

from .conftest import bearer, create_key, dead_inference_url


def _error(response) -> dict:
    return response.json()["error"]


async def test_per_key_buckets_answer_429_with_retry_after_then_recover(secure_gateway):
    async with secure_gateway(AION_RATE_API_PER_MIN=60, AION_RATE_API_BURST=2, AION_RATE_CHAT_PER_MIN=60,
                              AION_RATE_CHAT_BURST=1) as client:
        key, other = await create_key(client, role="admin"), await create_key(client, role="admin")
        for _ in range(2):
            assert (await client.get("/api/ai/documents", headers=bearer(key))).status_code == 200
        r = await client.get("/api/ai/documents", headers=bearer(key))
        assert r.status_code == 429, r.text
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 2
        assert _error(r)["type"] == "rate_limit_error"
        assert "AION_RATE_API_PER_MIN" in _error(r)["message"] and f"retry in {retry} s" in _error(r)["message"]

        # Buckets are per key, and chat has its own: the guard runs before the body is validated, so
        # a 422 means the call got past the limiter.
        assert (await client.get("/api/ai/documents", headers=bearer(other))).status_code == 200
        assert (await client.post("/api/ai/chat", headers=bearer(key), json={})).status_code == 422
        r = await client.post("/api/ai/chat", headers=bearer(key), json={})
        assert r.status_code == 429 and "AION_RATE_CHAT_PER_MIN" in _error(r)["message"]

        await asyncio.sleep(retry + 0.1)
        assert (await client.get("/api/ai/documents", headers=bearer(key))).status_code == 200


async def test_per_ip_bucket_throttles_key_guessing_and_applies_with_auth_off(secure_gateway, clean_db):
    async with secure_gateway(AION_RATE_IP_PER_MIN=60, AION_RATE_IP_BURST=3) as client:
        guesses = [await client.get("/api/ai/documents", headers=bearer("aion_" + f"{i}" * 43)) for i in range(4)]
        assert [r.status_code for r in guesses] == [401, 401, 401, 429]
        assert "127.0.0.1" in _error(guesses[-1])["message"] and "AION_RATE_IP_PER_MIN" in _error(guesses[-1])["message"]
        assert (await client.get("/health")).status_code != 429  # the health check is never limited

    settings = gateway_settings(clean_db, dead_inference_url(), AION_RATE_IP_PER_MIN=60, AION_RATE_IP_BURST=2)
    async with running_gateway(settings) as client:
        codes = [(await client.get("/api/ai/documents")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_rate_zero_means_no_limit():
    from services.gateway.security.ratelimit import TokenBuckets

    unlimited = TokenBuckets(0, 1)
    assert all(unlimited.take("k").allowed for _ in range(10_000))
    now = [0.0]
    limited = TokenBuckets(30, 2, clock=lambda: now[0])
    assert [limited.take("k").allowed for _ in range(3)] == [True, True, False]
    assert limited.take("k").retry_after_s == 2  # 30 per minute: one token every 2 s
    now[0] = 2.0
    assert limited.take("k").allowed and not limited.take("k").allowed


async def test_bodies_over_the_cap_are_refused_with_413(secure_gateway):
    async with secure_gateway(AION_MAX_BODY_MB=0.5, AION_MAX_UPLOAD_MB=0.25, AION_MAX_UPLOAD_FILES=1) as client:
        admin = await create_key(client, role="admin")
        big = json.dumps({"q": "x" * (600 * 1024)})
        r = await client.post("/api/ai/search", headers={**bearer(admin), "Content-Type": "application/json"},
                              content=big)
        assert r.status_code == 413 and _error(r)["code"] == "body_too_large"
        assert "AION_MAX_BODY_MB" in _error(r)["message"]

        async def chunked():  # no Content-Length: counted as it streams in
            for _ in range(12):
                yield b"x" * (64 * 1024)
        r = await client.post("/api/ai/search", headers={**bearer(admin), "Content-Type": "application/json"},
                              content=chunked())
        assert r.status_code == 413 and _error(r)["code"] == "body_too_large"

        # A body under the cap goes through (and fails later for its own reasons).
        r = await client.post("/api/ai/search", headers=bearer(admin), json={"q": "x" * 1000})
        assert r.status_code not in (413, 401, 403)

        # Uploads: a request larger than AION_MAX_UPLOAD_FILES x AION_MAX_UPLOAD_MB (+ framing).
        r = await client.post("/api/ai/documents", headers=bearer(admin),
                              files=[upload("big.md", b"a " * (800 * 1024), "text/markdown")])
        assert r.status_code == 413 and "AION_MAX_UPLOAD_FILES" in _error(r)["message"]
        # A user key is refused before its upload is read at all.
        user = await create_key(client, role="user")
        r = await client.post("/api/ai/documents", headers=bearer(user),
                              files=[upload("big.md", b"a " * (800 * 1024), "text/markdown")])
        assert r.status_code == 403


async def test_questions_longer_than_the_limit_are_refused(secure_gateway):
    async with secure_gateway(AION_MAX_QUERY_CHARS=50) as client:
        user = await create_key(client, role="user")
        r = await client.post("/api/ai/chat", headers=bearer(user), json={"message": "q" * 51})
        assert r.status_code == 400 and "AION_MAX_QUERY_CHARS" in _error(r)["message"]


async def test_cors_is_off_by_default(secure_gateway):
    async with secure_gateway() as client:
        preflight = await client.options("/api/ai/documents", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert "access-control-allow-origin" not in preflight.headers
        r = await client.get("/api/ai/documents", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_cors_allows_exactly_the_configured_origins(secure_gateway):
    async with secure_gateway(AION_CORS_ORIGINS="https://app.example.com, http://localhost:5173") as client:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        ok = await client.options("/api/ai/chat", headers={"Origin": "https://app.example.com", **ask})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        refused = await client.options("/api/ai/chat", headers={"Origin": "https://evil.example", **ask})
        assert "access-control-allow-origin" not in refused.headers
        # Errors carry the header too, so the page can show the message.
        r = await client.get("/api/ai/documents", headers={"Origin": "http://localhost:5173"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
    with pytest.raises(ValueError, match="is not an origin"):
        GatewaySettings(_env_file=None, AION_CORS_ORIGINS="app.example.com")


async def test_security_headers_on_every_response(secure_gateway):
    async with secure_gateway() as client:
        user = await create_key(client, role="user")
        responses = [await client.get("/health"), await client.get("/api/ai/documents"),
                     await client.get("/api/ai/documents", headers=bearer(user)), await client.get("/no-such-page"),
                     await client.get("/"), await client.get("/openapi.json")]
        for r in responses:
            assert r.headers["x-content-type-options"] == "nosniff", r.url
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        # FastAPI's API explorer needs its CDN script: no CSP there, the other headers stay.
        docs = await client.get("/docs")
        assert "content-security-policy" not in docs.headers and docs.headers["x-frame-options"] == "DENY"
