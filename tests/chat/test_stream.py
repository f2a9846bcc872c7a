"""SSE: order, citations, accents, switching to the fallback midway, disconnects; the OpenAI route."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from tests.chat.conftest import answer_events, sse
from tests.fixtures.openai_standin import REPLY

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the greenhouse roof vents open?"


def test_stream_order_sources_citations_and_accents(chat_gateway, clean_db, standin) -> None:
    # The stand-in answers as "local" here so the reply (with accents) is known exactly.
    with chat_gateway(AION_LOCAL_CHAT_URL=standin.url, AION_LOCAL_MODEL="ok") as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": QUESTION})
    names = [n for n, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert names.count("token") >= 3 and "error" not in names
    sources = events[0][1]["sources"]
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert sources[0]["title"].lower().startswith("greenhouse")
    text = "".join(d["text"] for n, d in events if n == "token")
    assert text == REPLY and "acentuação" in text
    done = events[-1][1]
    assert done["used"] == "local" and done["request_id"]
    # The prompt the model got numbers the passages exactly as the `sources` event does.
    system, question = standin.calls[-1]["messages"][0]["content"], standin.calls[-1]["messages"][-1]["content"]
    for s in sources:
        assert f"[{s['n']}] {s['text'].strip()[:60]}" in system
    assert question == QUESTION
    assert standin.calls[-1]["frequency_penalty"] == 0.5  # AION_LOCAL_FREQUENCY_PENALTY's default
    assert len(answer_events(clean_db, done["request_id"])) == 1


def test_local_stream_breaking_midway_continues_on_the_fallback(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "cut", "AION_LOCAL_RETRIES": 0,
           "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok"}
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": QUESTION})
    names = [n for n, _ in events]
    warn = next(d for n, d in events if n == "warn" and d["reason"] == "local_unavailable")
    assert warn["restart"] is True
    cut = names.index("warn")
    assert names[1:cut].count("token") == 3  # the local model's words before the cut
    after = "".join(d["text"] for n, d in events[cut:] if n == "token")
    assert after == REPLY and names[-1] == "done" and events[-1][1]["used"] == "fallback"
    logged = answer_events(clean_db, events[-1][1]["request_id"])
    assert len(logged) == 1 and logged[0]["used"] == "fallback" and logged[0]["reply"] == REPLY


def test_stream_error_when_nothing_can_answer(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "cut", "AION_LOCAL_RETRIES": 0,
           "OPENAI_API_KEY": None, "AION_FALLBACK_BASE_URL": None}
    with chat_gateway(**env) as url:
        events = sse(url, "/api/ai/chat/stream", params={"q": QUESTION})
        r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION}, timeout=60)
    names = [n for n, _ in events]
    assert names[-1] == "error" and "done" not in names
    assert "local model failed" in events[-1][1]["message"]
    assert r.status_code == 503 and "local model failed" in r.json()["error"]["message"]
    logged = answer_events(clean_db)
    assert len(logged) == 2 and all(e["complete"] is False for e in logged)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_client_disconnect_cancels_the_local_generation(chat_gateway, clean_db, inference_url) -> None:
    cancelled = 'aion_inference_sequences_finished_total{reason="cancelled"}'
    before = metric(httpx.get(f"{inference_url}/metrics").text, cancelled)
    with chat_gateway(AION_LOCAL_MAX_TOKENS=400) as url:
        with httpx.stream("GET", f"{url}/api/ai/chat/stream", params={"q": QUESTION}, timeout=60) as r:
            tokens = 0
            for line in r.iter_lines():
                tokens += line.startswith("event: token")
                if tokens >= 2:
                    break
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if metric(httpx.get(f"{inference_url}/metrics").text, cancelled) > before and answer_events(clean_db):
                break
            time.sleep(0.2)
    assert metric(httpx.get(f"{inference_url}/metrics").text, cancelled) == before + 1
    logged = answer_events(clean_db)
    assert len(logged) == 1 and logged[0]["complete"] is False and logged[0]["used"] == "local"


def test_openai_client_gets_grounded_answers(chat_gateway, clean_db, standin) -> None:
    with chat_gateway(AION_LOCAL_CHAT_URL=standin.url, AION_LOCAL_MODEL="ok") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model="aion", messages=[{"role": "user", "content": QUESTION}])
        assert resp.choices[0].message.content == REPLY
        extra = resp.model_extra or {}
        assert extra["sources"][0]["n"] == 1 and extra["aion"]["used"] == "local"
        chunks = list(client.chat.completions.create(
            model="aion", stream=True, messages=[{"role": "user", "content": QUESTION}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert (chunks[0].model_extra or {})["sources"]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert len(answer_events(clean_db)) == 2


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"), [
    ("POST", "/api/ai/chat", {"json": {"message": ""}}, 422, "message"),
    ("POST", "/api/ai/chat", {"json": {"message": "   "}}, 422, "blank"),
    ("POST", "/api/ai/chat", {"json": {"message": "x" * 5000}}, 400, "limit is"),
    ("POST", "/api/ai/chat", {"json": {"message": "oi", "tau": 1.5}}, 422, "tau"),
    ("POST", "/api/ai/chat", {"json": {"message": "oi", "tau": -0.1}}, 422, "tau"),
    ("POST", "/api/ai/chat", {"json": {"message": 7}}, 422, "message"),
    ("GET", "/api/ai/chat/stream", {"params": {"q": ""}}, 400, "q"),
    ("GET", "/api/ai/chat/stream", {"params": {"q": "oi", "tau": "2"}}, 400, "tau"),
    ("POST", "/api/ai/feedback", {"json": {"request_id": "nope", "rating": "up"}}, 404, "no answer"),
    ("POST", "/api/ai/feedback", {"json": {"request_id": "x", "rating": "meh"}}, 422, "rating"),
])
def test_bad_input_is_4xx_with_a_message(chat_gateway, method, path, kwargs, status, needle) -> None:
    with chat_gateway() as url:
        r = httpx.request(method, url + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_feedback_is_recorded(chat_gateway, clean_db, standin) -> None:
    with chat_gateway(AION_LOCAL_CHAT_URL=standin.url, AION_LOCAL_MODEL="ok") as url:
        out = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION}, timeout=60).json()
        r = httpx.post(f"{url}/api/ai/feedback", json={"request_id": out["request_id"], "rating": "down",
                                                        "comment": "wrong vents"})
        assert r.status_code == 200
        summary = httpx.get(f"{url}/api/ai/metrics", params={"days": 1}).json()
    assert summary["feedback"] == {"up": 0, "down": 1}
    assert summary["answers"] == 1 and summary["local"] == 1 and summary["counts"]["feedback"] == 1
