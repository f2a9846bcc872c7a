"""Two gateway replicas on one database enforce one set of per-key limits: rate limits and each key's
share of the fallback budget live in Postgres, not in either process."""

from __future__ import annotations

import json

import psycopg

from tests.chat.conftest import new_key
from tests.fixtures.openai_standin import run_standin
from tests.gateway.conftest import gateway_settings, running_gateway

from .conftest import bearer, create_key, dead_inference_url


async def test_rate_limits_are_per_key_across_replicas(clean_db):
    # 0.01 a minute: no token comes back while the test runs, however slow the machine.
    env = {"AION_AUTH": "on", "AION_RATE_API_PER_MIN": 0.01, "AION_RATE_API_BURST": 2}
    async with running_gateway(gateway_settings(clean_db, dead_inference_url(), **env)) as a, \
            running_gateway(gateway_settings(clean_db, dead_inference_url(), **env)) as b:
        key, other = await create_key(a, role="admin"), await create_key(a, role="admin")
        assert (await a.get("/api/ai/documents", headers=bearer(key))).status_code == 200
        assert (await b.get("/api/ai/documents", headers=bearer(key))).status_code == 200
        for replica in (a, b):
            r = await replica.get("/api/ai/documents", headers=bearer(key))
            assert r.status_code == 429 and "AION_RATE_API_PER_MIN" in r.json()["error"]["message"]
        assert (await b.get("/api/ai/documents", headers=bearer(other))).status_code == 200
        # A token is the same caller as its key: it draws from the key's bucket.
        token = (await a.post("/api/auth/token", headers=bearer(other))).json()["access_token"]
        assert (await b.get("/api/ai/documents", headers=bearer(token))).status_code == 429


async def test_each_keys_budget_share_holds_across_replicas(clean_db, inference_url):
    # Priced so one call's worst case ($0.048: 48 tokens at $1000/M) fits a key's share ($0.055 of $0.10)
    # but not once a settled call ($0.010: the stand-in's 10 words) is on its account.
    with run_standin() as standin:
        env = {"AION_AUTH": "on", "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok",
               "OPENAI_API_KEY": "test-key", "AION_FALLBACK_PRICES": json.dumps({"ok": [0, 1000]}),
               "AION_FALLBACK_MAX_TOKENS": 48, "AION_BUDGET_USD": 0.1, "AION_BUDGET_KEY_SHARE": 0.55,
               "AION_FALLBACK_SHARE_MIN_ANSWERS": 1000, "AION_RESPONSE_CACHE": "off"}
        async with running_gateway(gateway_settings(clean_db, inference_url, **env)) as a, \
                running_gateway(gateway_settings(clean_db, inference_url, **env)) as b:
            alice, bob = new_key(clean_db, "admin"), new_key(clean_db, "admin")

            async def ask(replica, key: str) -> dict:
                r = await replica.post("/api/ai/chat", headers=bearer(key),
                                       json={"message": "What is the answer?", "forceFallback": True})
                assert r.status_code == 200, r.text
                return r.json()

            first = await ask(a, alice)
            assert first["used"] == "fallback" and first["usage"]["cost_usd"] == 0.01
            second = await ask(b, alice)  # the other replica knows what alice spent
            assert second["used"] != "fallback" and "key_budget_share" in second["warnings"]
            assert (await ask(b, bob))["used"] == "fallback"  # bob's share is his own
    with psycopg.connect(clean_db) as conn:
        rows = conn.execute("SELECT caller, status, cost_usd FROM fallback_ledger ORDER BY created_at").fetchall()
    assert [(r[0].startswith("key:"), r[1], r[2]) for r in rows] == [(True, "settled", 0.01)] * 2
    assert rows[0][0] != rows[1][0]
