"""The answer event records exactly what the model was given, under the server's own answer id."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.services.answer_record import model_input
from services.gateway.services.prompt import (
    DEFAULT_RAG_SYSTEM_PROMPT_EN,
    PROMPT_VERSION,
    PromptPassage,
    build_rag_messages,
    source_label,
)
from tests.chat.conftest import answer_events
from tests.fixtures.servers import MODEL_CACHE

pytestmark = pytest.mark.slow

QUESTION = "How often is the chain of the touring bicycles lubricated?"
HISTORY = [{"role": "user", "content": "Do you rent bicycles?"},
           {"role": "assistant", "content": "Yes, touring bicycles by the day."}]


def expected_messages(out: dict, history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The RAG prompt rebuilt from the passages the reply says it used."""
    passages = [PromptPassage(n=s["n"], text=s["text"], source=source_label(s["title"], s["page_or_heading"]))
                for s in out["sources"]]
    return build_rag_messages(QUESTION, passages, language="en", persona=DEFAULT_RAG_SYSTEM_PROMPT_EN,
                              history=history)


def test_the_answer_event_holds_the_exact_model_input_and_the_servers_id(chat_gateway, clean_db, standin) -> None:
    from transformers import AutoTokenizer

    with chat_gateway(AION_FALLBACK_BASE_URL=standin.url, AION_FALLBACK_MODEL="ok") as url:
        # The local model (the real inference service), with a caller-chosen X-Request-ID.
        r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION, "history": HISTORY, "tau": 0.0},
                       headers={"X-Request-ID": "caller-chosen-id"}, timeout=300)
        assert r.status_code == 200, r.text
        local = r.json()
        # The fallback (a recording OpenAI-protocol server): what it received is what was logged.
        r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION, "forceFallback": True}, timeout=300)
        assert r.status_code == 200, r.text
        fallback = r.json()

        # Feedback addresses the server's id only: a caller's own X-Request-ID names no answer.
        r = httpx.post(f"{url}/api/ai/feedback", json={"request_id": "caller-chosen-id", "rating": "down"}, timeout=30)
        assert r.status_code == 404
        r = httpx.post(f"{url}/api/ai/feedback", json={"request_id": local["request_id"], "rating": "up"}, timeout=30)
        assert r.status_code == 200

    assert local["used"] == "local" and local["request_id"] != "caller-chosen-id" and len(local["request_id"]) == 32
    (event,) = answer_events(clean_db, local["request_id"])
    assert event["correlation_id"] == "caller-chosen-id"
    assert event["messages"] == expected_messages(local, HISTORY)
    assert event["prompt_version"] == PROMPT_VERSION and event["messages_omitted"] is False
    assert event["chunk_ids"] == [s["chunk"] for s in local["sources"]]
    assert event["model"] == local["model"] and event["fallback"] is False
    assert event["finish_reason"] in ("stop", "length")
    # The real model's prompt is those messages, token for token: the usage inference reported.
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_CACHE / "smollm2-135m-instruct"))
    ids = tokenizer.apply_chat_template(event["messages"], add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    assert local["usage"]["prompt_tokens"] == len(ids)

    assert fallback["used"] == "fallback"
    (event,) = answer_events(clean_db, fallback["request_id"])
    assert event["messages"] == standin.calls[-1]["messages"] == expected_messages(fallback, [])
    assert event["fallback"] is True and event["model"] == "ok" and event["finish_reason"] == "stop"
    assert event["correlation_id"] and event["correlation_id"] != fallback["request_id"]


def test_a_record_is_exact_or_absent_never_cut() -> None:
    messages = [{"role": "system", "content": "s" * 400}, {"role": "user", "content": "u" * 700}]
    assert model_input(messages, 1_100) == {"messages": messages, "messages_chars": 1_100,
                                            "messages_omitted": False, "prompt_version": PROMPT_VERSION}
    over = model_input(messages, 1_099)
    assert over["messages"] is None and over["messages_omitted"] is True and over["messages_chars"] == 1_100
