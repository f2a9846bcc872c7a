"""Grammar-constrained rows in the engine, on a tiny random Llama with the real SmolLM2 tokenizer.

Mechanics only (the real model's behaviour is tests/inference/test_tools.py): a constrained row beside
free rows in one batch leaves their tokens as they are alone; a Hermes-style template that renders
tools gets its own tags around the call; a model without a chat template is refused with a 400.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import jsonschema
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from services.inference.adapters import AdapterManager
from services.inference.engine import FinishReason, GenerationRequest, SamplingParams
from services.inference.engine.core import Engine
from services.inference.engine.runner import choose_runner
from services.inference.generation import GenerationService
from services.inference.loader import resolve_base_model
from services.inference.settings import InferenceSettings
from services.inference.tools import HERMES
from shared.errors import BadRequest
from shared.protocol.openai import ChatCompletionRequest
from tests.fixtures.servers import MODEL_CACHE

UNIT_DAYS = {"type": "object", "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                              "days": {"type": "integer", "minimum": 1, "maximum": 7}},
             "required": ["unit", "days"]}
FORECAST = {"type": "function", "function": {"name": "forecast", "description": "Weather for the coming days",
                                             "parameters": UNIT_DAYS}}

# A Hermes-style template (the family of Qwen2.5's): tools listed in the system turn, calls in tags.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] if messages[0]['role'] == 'system' else '' }}"
    "\n\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n"
    "Call a function with <tool_call>\n{\"name\": <name>, \"arguments\": <args>}\n</tool_call><|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}{%- if not (tools and message['role'] == 'system') %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE))


def tiny_service(tokenizer, max_batch_size: int = 8) -> GenerationService:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    runner = choose_runner(model, tokenizer, "cpu")
    engine = Engine(runner, max_batch_size=max_batch_size, max_queue=16)
    adapters = AdapterManager(runner, "tiny", four_bit=False)
    return GenerationService(engine, tokenizer, InferenceSettings(), adapters, runner.max_context)


@pytest.fixture(scope="module")
def service(tokenizer) -> Iterator[GenerationService]:
    gen = tiny_service(tokenizer)
    yield gen
    gen.engine.stop()


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"model": "tiny", "temperature": 0, "max_tokens": 40, **fields})


async def run_together(engine: Engine, requests: list[GenerationRequest]) -> list[tuple[str, FinishReason]]:
    """Submit every request before the engine thread starts, so its first admission takes them all."""
    handles = [engine.submit(r) for r in requests]
    if engine._thread is None:
        engine.start()
    out = []
    for handle in handles:
        parts, finished = [], None
        while finished is None:
            event = await handle.events.get()
            parts.append(event.text)
            finished = event.finished
        out.append(("".join(parts), finished))
    return out


async def test_a_constrained_row_leaves_the_free_rows_of_its_batch_unchanged(tokenizer) -> None:
    prompts = ["Name three colors.", "What is 2+2?", "Write a haiku about the sea."]

    def free(gen: GenerationService, prompt: str) -> GenerationRequest:
        return gen.build_chat(chat(messages=[{"role": "user", "content": prompt}])).request

    gen = tiny_service(tokenizer)  # the same seed: the same weights as the one below
    solo = [(await run_together(gen.engine, [free(gen, prompt)]))[0] for prompt in prompts]
    gen.engine.stop()

    gen = tiny_service(tokenizer)
    job = gen.build_chat(chat(messages=[{"role": "user", "content": "Weather as JSON"}],
                              response_format={"type": "json_schema",
                                               "json_schema": {"name": "w", "strict": True, "schema": UNIT_DAYS}}))
    assert job.request.constraint is not None
    together = await run_together(gen.engine, [free(gen, prompts[0]), job.request, free(gen, prompts[1]),
                                               free(gen, prompts[2])])
    assert gen.engine.stats().decode_steps < sum(len(t) for t, _ in together)  # rows shared decode steps
    gen.engine.stop()
    assert [together[0], together[2], together[3]] == solo
    text, finished = together[1]
    assert finished is FinishReason.STOP  # the grammar completed and ended the row
    jsonschema.validate(json.loads(text), UNIT_DAYS)
    # the random model alone would not write JSON: the free rows' text says so
    assert not any(t.startswith("{") for t, _ in solo)


async def test_a_template_that_renders_tools_gets_them_and_its_own_call_tags(tokenizer) -> None:
    hermes = AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE))
    hermes.chat_template = HERMES_TEMPLATE
    gen = tiny_service(hermes)
    try:
        assert gen.native_tools and gen.tool_syntax == HERMES
        job = gen.build_chat(chat(messages=[{"role": "user", "content": "Forecast for 3 days"}], tools=[FORECAST],
                                  tool_choice="required"))
        prompt = hermes.decode(job.request.prompt_ids)
        assert '"name": "forecast"' in prompt and "<tools>" in prompt  # rendered by the template itself
        [(text, finished)] = await run_together(gen.engine, [job.request])
        assert finished is FinishReason.STOP
        assert text.startswith('<tool_call>\n{"name":"forecast","arguments":') and text.endswith("}\n</tool_call>")
        content, calls = job.reader.read(text)
        assert content is None and calls[0].function.name == "forecast"
        jsonschema.validate(json.loads(calls[0].function.arguments), UNIT_DAYS)
    finally:
        gen.engine.stop()


def test_tools_in_the_system_prompt_when_the_template_cannot_render_them(service: GenerationService,
                                                                          tokenizer) -> None:
    assert not service.native_tools
    job = service.build_chat(chat(messages=[{"role": "user", "content": "Forecast?"}], tools=[FORECAST]))
    prompt = tokenizer.decode(job.request.prompt_ids)
    assert 'To call one, reply with only a JSON object' in prompt and '"enum":["celsius","fahrenheit"]' in prompt
    # a conversation that already called the tool: the call and its result reach the model as text
    job = service.build_chat(chat(tools=[FORECAST], messages=[
        {"role": "user", "content": "Forecast?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "forecast", "arguments": '{"unit":"celsius","days":2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"}]))
    prompt = tokenizer.decode(job.request.prompt_ids)
    assert '{"name":"forecast","arguments":{"unit":"celsius","days":2}}' in prompt
    assert "Result of the tool forecast:\nsunny, 24 C" in prompt


def test_a_model_without_a_chat_template_is_refused_by_name(service: GenerationService) -> None:
    template, service.tokenizer.chat_template = service.tokenizer.chat_template, None
    try:
        with pytest.raises(BadRequest, match="has no chat template"):
            service.build_chat(chat(messages=[{"role": "user", "content": "Forecast?"}], tools=[FORECAST],
                                    tool_choice="required"))
    finally:
        service.tokenizer.chat_template = template


@pytest.mark.parametrize(("fields", "param", "needle"), [
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [FORECAST], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "not among the tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}}}},
     "response_format.json_schema.schema", "if"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"a": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}}}}]},
     "tools[0].function.parameters", "oneOf"),
])
def test_requests_that_cannot_be_enforced_name_the_field(service: GenerationService, fields, param, needle) -> None:
    with pytest.raises(BadRequest) as err:
        service.build_chat(chat(messages=[{"role": "user", "content": "hi"}], **fields))
    assert err.value.param == param and needle in err.value.message


def test_a_loose_schema_is_best_effort_not_refused(service: GenerationService) -> None:
    loose = {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}
    job = service.build_chat(chat(messages=[{"role": "user", "content": "hi"}], response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": loose}}))
    assert job.request.constraint is not None


def test_deltas_of_a_call_reassemble_into_the_whole_call() -> None:
    from services.inference.tools import BARE, ToolCallReader

    text = '{"name":"forecast","arguments":{"unit":"celsius","days":3}}'
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    reader = ToolCallReader(BARE, ["forecast", "forecast_hourly"])
    events = [e for p in pieces for e in reader.feed(p)] + reader.finish()
    assert events[0] == ("call", "forecast") and all(kind == "arguments" for kind, _ in events[1:])
    _, [call] = ToolCallReader(BARE, ["forecast", "forecast_hourly"]).read(text)
    assert "".join(t for _, t in events[1:]) == call.function.arguments == '{"unit":"celsius","days":3}'
    content, calls = ToolCallReader(BARE, ["forecast"]).read("It will be sunny.")
    assert content == "It will be sunny." and calls == []


async def test_engine_keeps_serving_after_a_constrained_request(service: GenerationService) -> None:
    """Sanity: a constraint finishing early and a free request afterwards use the same engine."""
    job = service.build_chat(chat(messages=[{"role": "user", "content": "JSON"}],
                                  response_format={"type": "json_object"}, max_tokens=12))
    free = GenerationRequest(prompt_ids=job.request.prompt_ids, params=SamplingParams(max_new_tokens=5))
    results = await asyncio.wait_for(run_together(service.engine, [job.request, free]), 120)
    assert results[1][1] is FinishReason.LENGTH
