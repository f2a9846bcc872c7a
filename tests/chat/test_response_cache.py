"""The response cache on the real stack: a repeated question replays the stored answer (the paid one
paid once), across gateway replicas through Postgres, and never across a change of documents,
adapter, settings or an admin's clear; the semantic cache on the real MiniLM."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.chat.conftest import TENANT, answer_events, ledger_rows, sse
from tests.fixtures.openai_standin import REPLY
from tests.gateway.conftest import upload

pytestmark = pytest.mark.slow

QUESTION = "How often should I lubricate the bicycle chain?"
# all-MiniLM-L6-v2 cosine similarity to QUESTION: 0.958 (a paraphrase) and 0.928 (another vehicle).
PARAPHRASE = "How often should the bicycle chain be lubricated?"
NEAR_MISS = "How often should I lubricate the motorcycle chain?"


def ask(url: str, message: str = QUESTION, **body) -> dict:
    r = httpx.post(f"{url}/api/ai/chat", json={"message": message, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def paid_calls(db: str) -> int:
    return len([row for row in ledger_rows(db) if row["status"] == "settled"])


def test_a_repeated_paid_question_is_paid_once_and_replayed_as_a_stream(chat_gateway, clean_db) -> None:
    # The fallback is the real SmolLM2 behind the OpenAI protocol, billed at the unknown-model price.
    with chat_gateway() as url:
        first = ask(url, forceFallback=True)
        assert first["used"] == "fallback" and first["cached"] is False and first["usage"]["cost_usd"] > 0
        # The same question, written differently only in case, spacing and final punctuation.
        events = sse(url, "/api/ai/chat/stream", method="POST",
                     json={"message": "  how often should I LUBRICATE the bicycle   chain ", "forceFallback": True})
        stats = httpx.get(f"{url}/api/ai/cache").json()
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and "token" in names
    done = events[-1][1]
    assert done["cached"] is True and done["cache"] == "l1" and done["used"] == "fallback"
    assert done["saved_usd"] == pytest.approx(first["usage"]["cost_usd"], abs=1e-6)
    assert done["usage"]["cost_usd"] == 0 and done["usage"]["prompt_tokens"] == 0
    assert "".join(d["text"] for n, d in events if n == "token").strip() == first["text"]
    assert events[0][1]["sources"] == first["sources"] and events[0][1]["C"] == first["C"]
    assert paid_calls(clean_db) == 1  # the ledger shows one charge
    logged = answer_events(clean_db, done["request_id"])
    assert logged[0]["cached"] is True and logged[0]["cost_usd"] == 0 and logged[0]["complete"] is True
    assert stats["hits"] == 1 and stats["answers"] == 2 and stats["hit_rate"] == 0.5
    assert stats["saved_usd"] == pytest.approx(first["usage"]["cost_usd"], abs=1e-6) and stats["stored"] == 1

    # Another replica (a new process: empty L1) finds it in Postgres.
    with chat_gateway() as url:
        third = ask(url, QUESTION, forceFallback=True)
    assert third["cached"] is True and third["cache"] == "l2" and third["text"] == first["text"]
    assert paid_calls(clean_db) == 1


def _standin_gateway(chat_gateway, standin, **env):
    return chat_gateway(AION_FALLBACK_BASE_URL=standin.url, AION_FALLBACK_MODEL="ok", **env)


def test_a_cached_answer_never_crosses_a_change(chat_gateway, clean_db, standin) -> None:
    def fresh(url: str) -> bool:
        calls = len(standin.calls)
        out = ask(url, forceFallback=True)
        assert out["text"] == REPLY
        return len(standin.calls) == calls + 1 and out["cached"] is False

    with _standin_gateway(chat_gateway, standin) as url:
        assert fresh(url) and not fresh(url)  # the second one came from the cache
        # A new document: the knowledge version moves (the trigger on documents, at commit).
        r = httpx.post(f"{url}/api/ai/documents", files=[upload("note.md", b"# Note\n\nChains like wax.\n", "text/markdown")])
        assert r.status_code == 201, r.text
        assert fresh(url) and not fresh(url)
        # Its deletion too.
        assert httpx.delete(f"{url}/api/ai/documents/{r.json()['results'][0]['document_id']}").status_code == 200
        assert fresh(url) and not fresh(url)
        # The base weights served again (a rollback through the inference service's own API).
        assert httpx.post(f"{url}/api/ai/adapters/deactivate", timeout=60).status_code == 200
        assert fresh(url) and not fresh(url)
        # Another process promoted an adapter (the trainer): the registry's active adapter is in the key.
        with psycopg.connect(clean_db) as conn:
            conn.execute("INSERT INTO adapters (id, tenant_id, name, path, base_model, status, metrics) "
                         "VALUES (gen_random_uuid(), %s, 'aion-v1', '/nowhere', 'base', 'active', '{}')", (TENANT,))
        assert fresh(url) and not fresh(url)
        # An admin's clear.
        assert httpx.delete(f"{url}/api/ai/cache").json()["ok"] is True
        assert fresh(url) and not fresh(url)
        # τ is part of the routing, so of the key.
        calls = len(standin.calls)
        assert ask(url, forceFallback=True, tau=0.5)["cached"] is False and len(standin.calls) == calls + 1
    # Other answer settings (a restart with another fallback temperature): nothing stored applies.
    with _standin_gateway(chat_gateway, standin, AION_FALLBACK_TEMPERATURE=0.7) as url:
        assert fresh(url) and not fresh(url)
    # The TTL, in Postgres: an expired answer is not served (a new replica: nothing in its L1).
    with psycopg.connect(clean_db) as conn:
        conn.execute("UPDATE response_cache SET expires_at = now() - interval '1 second'")
    with _standin_gateway(chat_gateway, standin, AION_FALLBACK_TEMPERATURE=0.7) as url:
        assert fresh(url)


def test_transient_answers_and_the_off_switch_are_not_cached(chat_gateway, clean_db, standin) -> None:
    with _standin_gateway(chat_gateway, standin, AION_BUDGET_USD=0) as url:
        denied = ask(url, tau=0.99)
        again = ask(url, tau=0.99)
    # The budget refills; an answer shaped by its exhaustion must not outlive it.
    assert "budget_exhausted" in denied["warnings"] and again["cached"] is False
    with _standin_gateway(chat_gateway, standin, AION_RESPONSE_CACHE="off") as url:
        ask(url, forceFallback=True)
        assert ask(url, forceFallback=True)["cached"] is False
    assert paid_calls(clean_db) == 2


def test_semantic_cache_reuses_a_paraphrase_but_not_a_near_miss(chat_gateway, clean_db, standin) -> None:
    with _standin_gateway(chat_gateway, standin, AION_CACHE_SEMANTIC=True,
                          AION_CACHE_SEMANTIC_MIN_SIMILARITY=0.94) as url:
        first = ask(url, forceFallback=True)
        paraphrase = ask(url, PARAPHRASE, forceFallback=True)
        near_miss = ask(url, NEAR_MISS, forceFallback=True)
        again = ask(url, PARAPHRASE, forceFallback=True)
    assert first["cached"] is False
    assert paraphrase["cached"] is True and paraphrase["cache"] == "semantic" and paraphrase["text"] == first["text"]
    assert 0.94 <= paraphrase["cache_similarity"] < 1.0
    assert near_miss["cached"] is False
    assert again["cached"] is True and again["cache"] == "l1"
    assert paid_calls(clean_db) == 2
