"""The answer router: local when retrieval is confident, the budgeted fallback when it is not."""

from __future__ import annotations

import pytest

from tests.chat.conftest import answer_events, closed_port_url, ledger_rows
from tests.fixtures.openai_standin import REPLY

pytestmark = pytest.mark.slow

QUESTION = "How often is the chain of the touring bicycles lubricated?"


def ask(url: str, **body) -> dict:
    import httpx

    r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_confident_retrieval_answers_locally_with_sources(chat_gateway, clean_db) -> None:
    with chat_gateway() as url:
        out = ask(url)
    assert out["used"] == "local" and out["C"] >= 0.62 and out["text"]
    assert out["model"] and out["warnings"] == []
    assert out["sources"][0]["title"].lower().startswith("bicycle") and out["sources"][0]["n"] == 1
    assert [s["n"] for s in out["sources"]] == list(range(1, len(out["sources"]) + 1))
    events = answer_events(clean_db, out["request_id"])
    assert len(events) == 1 and events[0]["used"] == "local" and events[0]["complete"] is True
    assert events[0]["prompt"] == QUESTION and events[0]["reply"] == out["text"] or events[0]["reply"].strip() == out["text"]


def test_low_confidence_goes_to_the_fallback_and_is_billed(chat_gateway, clean_db) -> None:
    with chat_gateway() as url:
        out = ask(url, tau=0.99)
        budget = __import__("httpx").get(f"{url}/api/ai/budget").json()
    assert out["used"] == "fallback" and out["model"] == "smollm2-135m-instruct"
    assert "low_confidence" in out["warnings"] and out["usage"]["cost_usd"] > 0
    rows = ledger_rows(clean_db)
    assert len(rows) == 1 and rows[0]["status"] == "settled" and rows[0]["estimated"] is False
    assert budget["spent_usd"] == pytest.approx(rows[0]["cost"]) and budget["reserved_usd"] == 0
    assert budget["remaining_usd"] == pytest.approx(5.0 - rows[0]["cost"])
    assert len(answer_events(clean_db, out["request_id"])) == 1


def test_forced_fallback(chat_gateway, clean_db) -> None:
    with chat_gateway() as url:
        out = ask(url, forceFallback=True)
    assert out["used"] == "fallback" and "low_confidence" not in out["warnings"]
    assert len(answer_events(clean_db, out["request_id"])) == 1


def test_local_down_falls_back(chat_gateway, clean_db) -> None:
    with chat_gateway(AION_LOCAL_CHAT_URL=closed_port_url(), AION_LOCAL_RETRIES=0) as url:
        out = ask(url)
    assert out["used"] == "fallback" and "local_unavailable" in out["warnings"]
    assert answer_events(clean_db, out["request_id"])[0]["used"] == "fallback"


def test_unknown_local_model_is_a_local_failure_too(chat_gateway, clean_db) -> None:
    with chat_gateway(AION_LOCAL_MODEL="no-such-adapter") as url:
        out = ask(url)
    assert out["used"] == "fallback" and "local_unavailable" in out["warnings"]


def test_no_key_means_not_found_or_local_with_a_warning(chat_gateway, clean_db) -> None:
    with chat_gateway(OPENAI_API_KEY=None, AION_FALLBACK_BASE_URL=None) as url:
        out = ask(url, tau=0.99)
    # Below τ and nothing paid may answer: the documents do not seem to cover it (the closest quoted).
    assert out["used"] == "documents" and out["answer"] == "not_found"
    assert {"low_confidence", "fallback_disabled"} <= set(out["warnings"])
    assert out["text"].startswith("The documents do not seem to cover this.") and "[1]" in out["text"]
    with chat_gateway(OPENAI_API_KEY=None, AION_FALLBACK_BASE_URL=None, AION_LOW_CONFIDENCE_ANSWER="local") as url:
        tried = ask(url, tau=0.99)
    assert tried["used"] == "local" and tried["answer"] == "generated"
    assert {"low_confidence", "fallback_disabled"} <= set(tried["warnings"])
    assert ledger_rows(clean_db) == []


def test_spent_budget_means_local_with_a_warning(chat_gateway, clean_db) -> None:
    with chat_gateway(AION_BUDGET_USD=0.0) as url:
        out = ask(url, forceFallback=True)
    assert out["used"] == "local" and "budget_exhausted" in out["warnings"]
    assert ledger_rows(clean_db) == []


def test_fallback_share_cap_holds(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_FALLBACK_BASE_URL": standin.url,
           "AION_FALLBACK_MODEL": "ok", "AION_FALLBACK_SHARE_MIN_ANSWERS": 0, "AION_TAU_FALLBACK": 0.18}
    with chat_gateway(**env) as url:
        for _ in range(4):
            assert ask(url)["used"] == "local"
        capped = ask(url, forceFallback=True)  # 1 of 5 would be 20% > 18%
        assert capped["used"] == "local" and "fallback_share_cap" in capped["warnings"]
        assert ask(url)["used"] == "local"
        allowed = ask(url, forceFallback=True)  # 1 of 7 = 14%
        assert allowed["used"] == "fallback" and allowed["text"] == REPLY


@pytest.mark.parametrize("mode", ["fail-429", "fail-500", "slow"])
def test_failing_fallback_answers_locally_and_costs_nothing(chat_gateway, clean_db, standin, mode) -> None:
    env = {"AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": mode, "AION_FALLBACK_TIMEOUT": 2,
           "AION_FALLBACK_RETRIES": 1}
    with chat_gateway(**env) as url:
        out = ask(url, forceFallback=True)
    assert out["used"] == "local" and "fallback_failed" in out["warnings"]
    rows = ledger_rows(clean_db)
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["cost"] == 0
    calls = [c for c in standin.calls if c["model"] == mode]
    assert len(calls) == (2 if mode != "slow" else len(calls)) and calls  # retried once on 429/5xx
    assert len(answer_events(clean_db, out["request_id"])) == 1
