"""The gateway's OpenAI route passes tools, tool_choice and response_format to whichever model answers,
and returns tool calls in OpenAI's shape: the fallback (the stand-in) and the local model (real SmolLM2)."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.chat.conftest import answer_events
from tests.fixtures.openai_standin import TOOL_ARGUMENTS, TOOL_CALL_ID

pytestmark = pytest.mark.slow

ARGS = {"type": "object", "properties": {"location": {"type": "string", "maxLength": 40},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": ARGS}}]
OFF_TOPIC = [{"role": "user", "content": "What is the weather like in Lisbon right now?"}]  # low C: the fallback
ON_TOPIC = [{"role": "user", "content": "How often is the chain of the touring bicycles lubricated?"}]  # local


def test_tools_reach_the_answering_model_and_calls_come_back(chat_gateway, standin, clean_db) -> None:
    env = {"AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok", "AION_LOCAL_MAX_TOKENS": 80}
    with chat_gateway(**env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": ARGS}}
        r = client.chat.completions.create(model="aion", messages=OFF_TOPIC, tools=TOOLS, tool_choice="required",
                                           response_format=fmt)
        assert r.aion["used"] == "fallback"  # type: ignore[attr-defined]
        sent = standin.calls[-1]
        assert sent["tools"] == TOOLS and sent["tool_choice"] == "required" and sent["response_format"] == fmt
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
        [call] = r.choices[0].message.tool_calls
        assert (call.id, call.function.name, call.function.arguments) == (TOOL_CALL_ID, "get_weather", TOOL_ARGUMENTS)
        logged = answer_events(clean_db, r.aion["request_id"])[0]  # type: ignore[attr-defined]
        assert logged["tool_calls"][0]["function"]["arguments"] == TOOL_ARGUMENTS

        stream = client.chat.completions.create(model="aion", messages=OFF_TOPIC, tools=TOOLS, stream=True,
                                                tool_choice={"type": "function", "function": {"name": "get_weather"}})
        chunks = [c for c in stream if c.choices]
        pieces = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
        assert pieces[0].id == TOOL_CALL_ID and pieces[0].function.name == "get_weather" and len(pieces) > 2
        assert "".join(p.function.arguments or "" for p in pieces) == TOOL_ARGUMENTS
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # the local model (confident retrieval) is constrained by the same schema
        local = client.chat.completions.create(model="aion", messages=ON_TOPIC, tools=TOOLS, temperature=0,
                                               tool_choice="required")
        assert local.aion["used"] == "local"  # type: ignore[attr-defined]
        [call] = local.choices[0].message.tool_calls
        assert call.id.startswith("call_") and call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), ARGS)

        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="aion", messages=OFF_TOPIC, n=2)
        assert refused.value.body["param"] == "n"  # type: ignore[index]
