"""Answers you can trust: the support check, "not found", the question's language, follow-ups, history that
fits the model, admin-only routing options — on the real gateway, real Postgres, real MiniLM retrieval,
the real SmolLM2 where the model's own words matter, and the OpenAI stand-in where a known answer must be
contradicted or a paid call counted."""

from __future__ import annotations

import re

import httpx
import psycopg
import pytest

from services.gateway.services.citations import check_citations
from services.gateway.services.support import Evidence
from tests.chat.conftest import answer_events, ledger_rows, sse
from tests.fixtures.openai_standin import CONTRADICTION, MISCITED, REPLY

pytestmark = pytest.mark.slow

CHAIN = "How often is the chain of the touring bicycles lubricated?"
# From tests/data/kb/bicycle.md, the sentence that answers CHAIN.
CHAIN_SENTENCE = "Clean and lubricate the chain every 300 kilometres, or after every ride in the rain."


def ask(url: str, timeout: float = 120, **body) -> dict:
    r = httpx.post(f"{url}/api/ai/chat", json=body, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def retrieval_events(db: str, request_id: str) -> list[dict]:
    with psycopg.connect(db) as conn:
        return [r[0] for r in conn.execute(
            "SELECT meta FROM ai_events WHERE kind = 'retrieval' AND request_id = %s", (request_id,))]


def test_a_contradicted_answer_is_flagged_and_replaced_by_the_quoted_sentences(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "contradict", "OPENAI_API_KEY": None,
           "AION_FALLBACK_BASE_URL": None, "AION_SUPPORT_THRESHOLD": 0.6}
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": CHAIN})
    names = [n for n, _ in events]
    warn = next(d for n, d in events if n == "warn" and d["reason"] == "unsupported_answer")
    assert warn["restart"] is True and warn["next"] == "quoted" and warn["fallback"] == "fallback_disabled"
    assert warn["support"] < warn["threshold"]
    cut = names.index("warn")
    assert "".join(d["text"] for n, d in events[:cut] if n == "token") == CONTRADICTION  # streamed, then retracted
    text = "".join(d["text"] for n, d in events[cut:] if n == "token")
    assert text.startswith("Quoted from the documents:") and f"“{CHAIN_SENTENCE}" in text and "” [1]" in text
    done = events[-1][1]
    assert names[-1] == "done" and done["used"] == "documents" and done["answer"] == "quoted"
    assert done["support"] == warn["support"] and done["model"] is None
    logged = answer_events(clean_db, done["request_id"])
    assert len(logged) == 1 and logged[0]["reply"] == text and logged[0]["support"] == warn["support"]
    assert logged[0]["answer"] == "quoted" and "unsupported_answer" in logged[0]["warnings"]


def test_an_unsupported_answer_is_re_answered_by_the_fallback_within_the_budget(chat_gateway, clean_db,
                                                                              standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "contradict",
           "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok", "AION_BUDGET_USD": 1.0,
           "AION_SUPPORT_THRESHOLD": 0.6}
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": CHAIN})
        budget = httpx.get(f"{url}/api/ai/budget").json()
    warn = next(d for n, d in events if n == "warn" and d["reason"] == "unsupported_answer")
    assert warn["restart"] is True and warn["next"] == "fallback"
    cut = [n for n, _ in events].index("warn")
    assert "".join(d["text"] for n, d in events[cut:] if n == "token") == REPLY
    done = events[-1][1]
    assert done["used"] == "fallback" and done["answer"] == "generated" and done["usage"]["cost_usd"] > 0
    assert [c["model"] for c in standin.calls] == ["contradict", "ok"]
    rows = ledger_rows(clean_db)
    assert len(rows) == 1 and rows[0]["status"] == "settled" and 0 < rows[0]["cost"] <= rows[0]["reserved"]
    assert budget["spent_usd"] == pytest.approx(rows[0]["cost"]) and budget["spent_usd"] <= 1.0


def test_a_citation_of_the_wrong_passage_is_renumbered_as_it_streams(chat_gateway, clean_db, standin) -> None:
    """The stand-in states the first passage's fact and cites [3]: the client and the record get [1]."""
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "miscite", "OPENAI_API_KEY": None,
           "AION_FALLBACK_BASE_URL": None, "AION_SUPPORT_THRESHOLD": 0.6}
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": CHAIN})
    sources = next(d for n, d in events if n == "sources")["sources"]
    assert CHAIN_SENTENCE in sources[0]["text"] and CHAIN_SENTENCE not in sources[2]["text"]
    served = MISCITED.replace("[3]", "[1]")
    assert "".join(d["text"] for n, d in events if n == "token") == served
    assert not any(n == "warn" for n, _ in events)  # nothing retracted: only the mark waited for its "]"
    done = events[-1][1]
    assert done["used"] == "local" and done["answer"] == "generated"
    logged = answer_events(clean_db, done["request_id"])
    assert logged[0]["reply"] == served and logged[0]["citations_corrected"] == 1


def test_the_prompt_speaks_the_question_s_language(chat_gateway, clean_db, standin) -> None:
    with chat_gateway(AION_LOCAL_CHAT_URL=standin.url, AION_LOCAL_MODEL="ok", AION_TAU_CONFIDENCE=0.3) as url:
        english = ask(url, message=CHAIN, store=False)
        portuguese = ask(url, message="Com que frequência a corrente das bicicletas é lubrificada?", store=False)
    sent_en, sent_pt = (c["messages"] for c in standin.calls[-2:])
    assert english["language"] == "en" and portuguese["language"] == "pt"
    assert sent_en[0]["role"] == "system" and "using only the documents below" in sent_en[0]["content"]
    assert "Você é a AION" not in sent_en[0]["content"] and "Use APENAS" not in sent_en[0]["content"]
    assert sent_en[-1] == {"role": "user", "content": CHAIN}  # the question alone: nothing to echo
    assert sent_pt[0]["content"].startswith("Você é a AION") and "usando apenas os documentos" in sent_pt[0]["content"]
    # The passages the model got are numbered as the `sources` the client shows, and fit the budget (3).
    assert [s["n"] for s in english["sources"]] == [1, 2, 3]
    assert f"[1] {english['sources'][0]['text'].strip()[:60]}" in sent_en[0]["content"]


def test_the_real_model_answers_an_english_question_in_english_without_echoing(chat_gateway, clean_db) -> None:
    with chat_gateway(OPENAI_API_KEY=None, AION_FALLBACK_BASE_URL=None, AION_TAU_CONFIDENCE=0.3,
                      AION_SUPPORT_THRESHOLD=0.6) as url:
        out = ask(url, message=CHAIN)
    assert out["language"] == "en" and out["text"]
    assert 0.0 <= out["support"] <= 1.0 and out["answer"] in ("generated", "quoted")
    assert out["used"] == ("local" if out["answer"] == "generated" else "documents")
    for instruction in ("Use APENAS", "CONTEXTO", "Pergunta:", "Instruções", "using only the documents below"):
        assert instruction not in out["text"]
    # Whatever the model cited, every mark served names a passage it was given and passes the check again.
    evidence = [Evidence(s["n"], s["text"]) for s in out["sources"]]
    assert {int(n) for n in re.findall(r"\[(\d+)\]", out["text"])} <= {s["n"] for s in out["sources"]}
    assert check_citations(out["text"], evidence, CHAIN, 0.6) == out["text"]
    if out["answer"] == "quoted":  # the model's words were not backed: the passage's own sentence replaced them
        assert CHAIN_SENTENCE in out["text"] and out["support"] < 0.6


def test_a_question_outside_the_documents_gets_not_found_without_a_fallback(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "OPENAI_API_KEY": None,
           "AION_FALLBACK_BASE_URL": None}
    with chat_gateway(**env) as url:
        out = ask(url, message="Who won the football World Cup in 2018?")
    assert out["C"] < 0.62 and "low_confidence" in out["warnings"] and "fallback_disabled" in out["warnings"]
    assert out["answer"] == "not_found" and out["used"] == "documents"
    assert out["text"].startswith("The documents do not seem to cover this.")
    assert standin.calls == []  # no model was asked to make something up
    assert ledger_rows(clean_db) == []


def test_a_follow_up_is_rewritten_before_retrieval(chat_gateway, clean_db) -> None:
    question, follow_up = "How are the tomatoes in the greenhouse watered?", "At what time?"
    with chat_gateway(OPENAI_API_KEY=None, AION_FALLBACK_BASE_URL=None, AION_TAU_CONFIDENCE=0.3) as url:
        first = ask(url, message=question)
        second = ask(url, message=follow_up, conversation_id=first["conversation_id"])
        alone = ask(url, message=follow_up, store=False)
    # The real model rewrites it, or (when its rewrite drops the follow-up's words or invents) the rule
    # does; either way the standalone question carries the conversation's subject.
    assert second["rewritten"] != follow_up and "tomatoes" in second["rewritten"] and "time" in second["rewritten"]
    # Rewritten, the follow-up finds the irrigation passage; on its own words it does not.
    assert "drip irrigation" in second["sources"][0]["text"]
    assert "drip irrigation" not in alone["sources"][0]["text"] and alone["rewritten"] is None
    (event,) = retrieval_events(clean_db, second["request_id"])
    assert event["original_query"] == follow_up and event["query"] == second["rewritten"]
    logged = answer_events(clean_db, second["request_id"])[0]
    assert logged["prompt"] == follow_up and logged["rewritten"] == second["rewritten"]
    assert logged["rewrite_method"] in ("model", "rule") and logged["history_turns"] == 2


def test_a_long_history_is_trimmed_to_the_context_and_never_sent_to_the_fallback(chat_gateway, clean_db,
                                                                                standin) -> None:
    env = {"AION_LOCAL_CONTEXT_TOKENS": 1024, "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok",
           "AION_TAU_CONFIDENCE": 0.3}
    history = [{"role": role, "content": f"turn {i}: " + "the greenhouse vents and the bicycle chain " * 10}
               for i, role in zip(range(20), ["user", "assistant"] * 10, strict=True)]
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", method="POST", json={"message": CHAIN, "history": history})
        too_long = httpx.post(f"{url}/api/ai/chat", json={"message": "why? " * 390, "store": False}, timeout=60)
    trimmed = next(d for n, d in events if n == "warn" and d["reason"] == "history_trimmed")
    assert 0 < trimmed["dropped_turns"] < 20 and trimmed["dropped_turns"] % 2 == 0
    done = events[-1][1]
    assert done["used"] in ("local", "documents") and standin.calls == []  # the real model took the trimmed prompt
    logged = answer_events(clean_db, done["request_id"])[0]
    assert logged["history_dropped"] == trimmed["dropped_turns"] and logged["history_turns"] == 20
    # A question that cannot fit even alone is the caller's to shorten: a 400 that says so, no paid call.
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "prompt_too_long"
    assert "AION_LOCAL_MAX_TOKENS" in too_long.json()["error"]["message"]
    assert standin.calls == [] and ledger_rows(clean_db) == []


def test_a_history_turn_over_the_limit_on_v1_chat_completions_is_a_400(chat_gateway, clean_db) -> None:
    with chat_gateway() as url:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={"model": "aion", "messages": [
            {"role": "user", "content": "x" * 9000}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": CHAIN}]})
    assert r.status_code == 400, r.text
    assert "earlier message 1" in r.json()["error"]["message"] and "8000" in r.json()["error"]["message"]
