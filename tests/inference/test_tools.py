"""Tools and structured output on the real SmolLM2, through the official openai client, over real HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
WEATHER_ARGS = {"type": "object", "properties": {
    "location": {"type": "string", "maxLength": 40, "description": "the city, e.g. Paris"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["location", "unit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                      "parameters": WEATHER_ARGS}},
    {"type": "function", "function": {"name": "get_time", "description": "Get the local time in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                                               "maxLength": 40}},
                                                     "required": ["city"]}}},
]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
# Every value bounded by a pattern, a range or an enum: 44 bytes at most, so 48 tokens always finish it.
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,9}$"},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "pet": {"type": "string", "enum": ["cat", "dog", "none"]}},
    "required": ["name", "age", "pet"], "additionalProperties": False}


@pytest.fixture
def client(inference_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused", max_retries=0)


def test_a_weather_function_is_called_with_schema_valid_arguments(client: openai.OpenAI) -> None:
    required = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                              temperature=0, max_tokens=80)
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_ARGS)

    named = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, max_tokens=80,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    [call] = named.choices[0].message.tool_calls
    assert named.choices[0].finish_reason == "tool_calls" and call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[1]["function"]["parameters"])

    # auto: text or a call, whichever the model picks; a call is always a valid one
    auto = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, max_tokens=40)
    message = auto.choices[0].message
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
        schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == message.tool_calls[0]
                      .function.name)
        jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), schema)
    else:
        assert message.content and not message.content.lstrip().startswith("{")

    # streamed: the id, type and name first, then argument fragments that add up to the same call
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=80, stream=True)
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [d.delta.tool_calls[0] for d in deltas if d.delta.tool_calls]
    assert calls[0].index == 0 and calls[0].id.startswith("call_") and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert all(c.index == 0 and c.id is None and c.function.name is None for c in calls[1:])
    assert len(calls) > 2  # the arguments really came in pieces
    assert "".join(c.function.arguments or "" for c in calls) == required.choices[0].message.tool_calls[0] \
        .function.arguments
    assert deltas[-1].finish_reason == "tool_calls" and not any(d.delta.content for d in deltas)


async def test_json_schema_output_always_parses_and_validates(inference_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{inference_url}/v1", api_key="unused", max_retries=0)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}}
    room = asyncio.Semaphore(24)  # below the queue limit; the engine batches what is running

    async def one(i: int) -> tuple[str, str | None]:
        async with room:
            r = await client.chat.completions.create(
                model=MODEL, temperature=1.0, top_p=1.0, max_tokens=48, response_format=fmt,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": f"Invent person number {i}."}])
        return r.choices[0].message.content or "", r.choices[0].finish_reason

    results = await asyncio.gather(*[one(i) for i in range(100)])
    await client.close()
    for text, finish in results:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), PERSON)
    assert len({text for text, _ in results}) > 10  # sampled, not one answer repeated


async def test_a_constrained_request_leaves_the_free_ones_beside_it_unchanged(inference_url: str) -> None:
    questions = ["Name three colors.", "What is 2+2?", "Who wrote Hamlet?"]
    body = {"model": MODEL, "temperature": 0, "max_tokens": 24}
    async with httpx.AsyncClient(base_url=f"{inference_url}/v1", timeout=120) as http:
        async def free(q: str) -> str:
            r = await http.post("/chat/completions", json={**body, "messages": [{"role": "user", "content": q}]})
            return r.json()["choices"][0]["message"]["content"]

        solo = [await free(q) for q in questions]
        constrained = http.post("/chat/completions", json={
            **body, "max_tokens": 48, "messages": [{"role": "user", "content": "Invent a person."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
        together = await asyncio.gather(constrained, *[free(q) for q in questions])
    assert list(together[1:]) == solo
    jsonschema.validate(json.loads(together[0].json()["choices"][0]["message"]["content"]), PERSON)


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"no_such_field": 1}, "no_such_field"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_fields_the_service_does_not_serve_are_refused_by_name(inference_url: str, extra: dict, param: str) -> None:
    r = httpx.post(f"{inference_url}/v1/chat/completions", timeout=30, json={
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"]


def test_the_official_clients_harmless_fields_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_completion_tokens=4, temperature=0, seed=7, stop=["\n\n"], n=1,
        logprobs=False, user="someone", metadata={"k": "v"}, store=False, parallel_tool_calls=False,
        tools=TOOLS, tool_choice="none", response_format={"type": "text"}, service_tier="auto",
        prompt_cache_key="k1", safety_identifier="s1")
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.tool_calls is None
