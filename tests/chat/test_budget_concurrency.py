"""40 concurrent forced-fallback requests against a cap worth 10 calls: the cap holds, nothing stays reserved."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.chat.conftest import answer_events, ledger_rows

pytestmark = pytest.mark.slow


async def test_concurrent_fallbacks_never_spend_past_the_cap(chat_gateway, clean_db, standin) -> None:
    # Stand-in prices make each call cost (120 + 11 tokens) * $1000/M = $0.131; the cap buys 10 of them.
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_FALLBACK_BASE_URL": standin.url,
           "AION_FALLBACK_MODEL": "ok", "AION_FALLBACK_PRICES": '{"ok": [1000, 1000]}',
           "AION_FALLBACK_MAX_TOKENS": 20, "AION_BUDGET_USD": 1.31}
    with chat_gateway(**env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            replies = await asyncio.gather(*[
                client.post("/api/ai/chat", json={"message": f"Question {i} about the chain?", "forceFallback": True})
                for i in range(40)])
            budget = (await client.get("/api/ai/budget")).json()
    assert all(r.status_code == 200 for r in replies)
    used = [r.json()["used"] for r in replies]
    rows = ledger_rows(clean_db)
    settled = sum(r["cost"] for r in rows)
    assert settled <= 1.31 + 1e-9
    assert 1 <= used.count("fallback") <= 10
    assert not [r for r in rows if r["status"] == "reserved"]
    # The rest answered for free: the local model, or (below τ) "not found" with the closest passages.
    assert used.count("local") + used.count("documents") == 40 - used.count("fallback")
    assert all("budget_exhausted" in r.json()["warnings"] for r in replies if r.json()["used"] != "fallback")
    assert budget["reserved_usd"] == 0 and budget["spent_usd"] == pytest.approx(settled)
    assert len(answer_events(clean_db)) == 40
