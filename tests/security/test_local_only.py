"""With AION_AUTH=off (every caller is admin), a request addressed to a name that is not loopback is
refused (DNS rebinding), and so is a state-changing request a browser sends from another origin."""

from __future__ import annotations

from services.gateway.security.origin import is_loopback_host
from tests.gateway.conftest import gateway_settings, running_gateway

from .conftest import dead_inference_url


def test_loopback_host_names() -> None:
    for host in ("localhost", "localhost:3000", "LOCALHOST.", "app.localhost:8080", "127.0.0.1", "127.0.0.1:3000",
                 "127.9.8.7", "[::1]", "[::1]:3000"):
        assert is_loopback_host(host), host
    for host in ("evil.example", "evil.example:3000", "localhost.evil.example", "10.0.0.1:3000", "0.0.0.0",
                 "[::]:3000", "127.0.0.1.nip.io", ""):
        assert not is_loopback_host(host), host


async def test_dns_rebinding_and_cross_origin_writes_are_refused_with_auth_off(clean_db) -> None:
    settings = gateway_settings(clean_db, dead_inference_url(), AION_CORS_ORIGINS="http://localhost:5173")
    async with running_gateway(settings) as client:
        r = await client.get("/api/ai/documents", headers={"Host": "evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_loopback"
        assert "DNS" in r.json()["error"]["message"] and "AION_AUTH=on" in r.json()["error"]["message"]
        assert (await client.get("/", headers={"Host": "evil.example:3000"})).status_code == 403
        for host in ("localhost:3000", "127.0.0.1:3000", "[::1]:3000"):
            assert (await client.get("/api/ai/documents", headers={"Host": host})).status_code == 200

        start = "/api/ai/train/lora/start"
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
                        # Another local app (another port) is the same site but another origin.
                        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8080"}):
            r = await client.post(start, headers=headers, json={})
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin_request", headers
        # Reads are not writes; the gateway's own page, a listed origin and non-browser clients pass.
        assert (await client.get("/api/ai/documents", headers={"Origin": "https://evil.example"})).status_code == 200
        assert (await client.post(start, json={}, headers={"Origin": "http://127.0.0.1",
                                                           "Sec-Fetch-Site": "same-origin"})).status_code == 202
        assert (await client.post("/api/ai/search", json={}, headers={"Origin": "http://localhost:5173",
                                                                      "Sec-Fetch-Site": "cross-site"})).status_code == 422
        assert (await client.post("/api/ai/search", json={})).status_code == 422
        assert (await client.post("/api/ai/search", json={},
                                  headers={"Origin": "http://127.0.0.1"})).status_code == 422


async def test_with_auth_on_the_host_is_the_proxys_business(clean_db) -> None:
    settings = gateway_settings(clean_db, dead_inference_url(), AION_AUTH="on")
    async with running_gateway(settings) as client:
        r = await client.get("/api/ai/documents", headers={"Host": "aion.example.com"})
        assert r.status_code == 401  # the key decides, not the name
