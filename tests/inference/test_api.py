"""The inference service's two dialects on the real default model, over real HTTP."""

from __future__ import annotations

import json
import math
import re

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant."


def sse_events(response: httpx.Response) -> list[tuple[str, str]]:
    events, name = [], "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, line.split(":", 1)[1].strip()))
            name = "message"
    return events


def test_health_reports_model_and_device(inference_url: str) -> None:
    body = httpx.get(f"{inference_url}/health").json()
    assert body["status"] == "ready"
    assert body["base_model"] == "smollm2-135m-instruct"
    assert body["adapter_loaded"] is False
    assert body["device"] == "cpu" and body["quantization"] == "fp32"


def test_generate_answers_capital_of_france(inference_url: str) -> None:
    r = httpx.post(f"{inference_url}/generate", json={
        "system": SYSTEM, "prompt": "What is the capital of France?", "temperature": 0, "max_new_tokens": 24},
        timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and "Paris" in body["text"]
    assert body["ms"] > 0 and body["usage"]["completion_tokens"] > 0


def test_generate_stream_yields_tokens_then_done(inference_url: str) -> None:
    with httpx.stream("POST", f"{inference_url}/generate/stream", json={
            "system": SYSTEM, "prompt": "Name three colors.", "temperature": 0, "max_new_tokens": 24},
            timeout=60) as r:
        assert r.status_code == 200
        events = sse_events(r)
    names = [n for n, _ in events]
    assert names.count("token") >= 3
    assert names[-1] == "done" and "token" not in names[names.index("done"):]
    done = json.loads(events[-1][1])
    assert done["finish_reason"] in ("stop", "length") and done["usage"]["completion_tokens"] >= 3
    text = "".join(json.loads(d)["text"] for n, d in events if n == "token")
    assert text.strip()


def test_stream_keeps_accents_whole(inference_url: str) -> None:
    with httpx.stream("POST", f"{inference_url}/generate/stream", json={
            "system": "Responda em português.", "prompt": "Escreva: ação, coração, português, você.",
            "temperature": 0, "max_new_tokens": 40}, timeout=60) as r:
        events = sse_events(r)
    pieces = [json.loads(d)["text"] for n, d in events if n == "token"]
    assert all("\ufffd" not in p for p in pieces)
    assert any(ch in "".join(pieces) for ch in "ãçêéó")


def test_openai_client_non_stream_and_stream(inference_url: str) -> None:
    client = openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused")
    cards = {m.id: m for m in client.models.list().data}
    assert "smollm2-135m-instruct" in cards
    # The context length, in vLLM's field, so the gateway can fit its prompts (SmolLM2's config: 8192).
    assert cards["smollm2-135m-instruct"].max_model_len == 8192
    resp = client.chat.completions.create(
        model="smollm2-135m-instruct", temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens > 0 and resp.usage.total_tokens > resp.usage.prompt_tokens

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "What is the capital of France?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == resp.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_embeddings_are_normalized_and_rank_paraphrase_first(inference_url: str) -> None:
    client = openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused")
    texts = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Stock markets fell sharply today."]
    data = client.embeddings.create(model="all-minilm-l6-v2", input=texts).data
    vectors = [d.embedding for d in data]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-3 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.3


@pytest.mark.parametrize(("payload", "status", "needle"), [
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "   "}, 422, "blank"),
    ({"prompt": 42}, 422, "prompt"),
    ({"prompt": "hi", "max_new_tokens": "many"}, 422, "max_new_tokens"),
    ({"prompt": "hi", "max_new_tokens": -5}, 422, "between 1 and"),
    ({"prompt": "hi", "max_new_tokens": 0}, 422, "between 1 and"),
    ({"prompt": "hi", "max_new_tokens": 10**9}, 422, "between 1 and"),
    ({"prompt": "hi", "temperature": -1}, 422, "temperature"),
    ({"prompt": "hi", "adapter": "no-such-adapter"}, 404, "not loaded"),
])
def test_generate_bad_input_is_4xx_with_message(inference_url: str, payload: dict, status: int, needle: str) -> None:
    r = httpx.post(f"{inference_url}/generate", json=payload, timeout=30)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_over_long_prompt_names_both_numbers(inference_url: str) -> None:
    r = httpx.post(f"{inference_url}/generate", json={"prompt": "palavra " * 9000, "max_new_tokens": 100},
                   timeout=60)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "8192" in message and "100" in message and "tokens" in message


def test_openai_bad_input(inference_url: str) -> None:
    client = openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="default", messages=[])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="default", max_tokens=-1, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm-l6-v2", input=[""])
    r = httpx.post(f"{inference_url}/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_frequency_penalty_breaks_repetition_on_both_dialects(inference_url: str) -> None:
    client = openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused", max_retries=0)

    def reply(**penalty: float) -> str:
        r = client.chat.completions.create(model="default", temperature=0, max_tokens=40, **penalty,
                                           messages=[{"role": "user", "content": "Write the word hello twenty times."}])
        return r.choices[0].message.content or ""

    plain, penalized = reply(), reply(frequency_penalty=1.5)
    assert plain.lower().count("hello") >= 15, plain
    assert penalized.lower().count("hello") <= 5, penalized
    assert reply(frequency_penalty=0.0) == plain  # zero is the same as not sending it
    native = httpx.post(f"{inference_url}/generate", timeout=60, json={
        "prompt": "Write the word hello twenty times.", "system": SYSTEM, "max_new_tokens": 40, "temperature": 0,
        "presence_penalty": 2.0}).json()["text"]
    assert native.lower().count("hello") <= 5, native
    with pytest.raises(openai.UnprocessableEntityError, match="frequency_penalty"):
        reply(frequency_penalty=2.5)


def test_metrics_expose_tokens_and_queue(inference_url: str) -> None:
    httpx.post(f"{inference_url}/generate", json={"prompt": "Say hi.", "max_new_tokens": 4}, timeout=60)
    text = httpx.get(f"{inference_url}/metrics").text
    for name in ("aion_inference_generated_tokens_total", "aion_inference_queue_depth",
                 "aion_inference_running_sequences", "aion_inference_time_to_first_token_seconds_bucket",
                 "aion_inference_requests_total", "aion_inference_errors_total",
                 "aion_inference_prefix_cache_bytes"):
        assert name in text


def test_a_repeated_prompt_prefix_comes_from_the_cache(inference_url: str) -> None:
    def hits() -> float:
        text = httpx.get(f"{inference_url}/metrics").text
        return float(re.search(r"^aion_inference_prefix_cache_hit_tokens (\S+)$", text, re.M).group(1))

    body = {"prompt": "Name the largest planet of the solar system in one word.", "max_new_tokens": 4,
            "temperature": 0}
    first = httpx.post(f"{inference_url}/generate", json=body, timeout=60).json()
    before = hits()
    again = httpx.post(f"{inference_url}/generate", json=body, timeout=60).json()
    assert hits() - before >= 16  # at least the system prompt's first block was reused
    assert again["text"] == first["text"]  # and the answer is the same, bit for bit
