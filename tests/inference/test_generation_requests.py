"""From API request to engine request, with the real SmolLM2 tokenizer: how many new tokens a request may
have when it names none, and chat templates that have no system role (Gemma's, older Mistral's)."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoTokenizer

from services.inference.generation import GenerationService, accepts_system_role
from services.inference.loader import resolve_base_model
from services.inference.settings import InferenceSettings
from shared.errors import BadRequest
from tests.fixtures.servers import MODEL_CACHE

# Gemma's template, in short: it refuses a system message outright.
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


class _Runner:
    """What request building reads from the runner: the vocabulary's size and end tokens (for grammars)."""

    class config:  # noqa: N801 — stands where a model config is read
        vocab_size = 49152

    eos_ids = frozenset({2})


class _Engine:
    """What request building reads from the engine: its weights version and how much one request may hold."""

    weights_version = 3
    positions = 256
    runner = _Runner()

    def max_request_positions(self) -> int:
        return self.positions


class _NoAdapters:
    def resolve(self, model: str | None) -> None:
        return None


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE))


def service(tokenizer, max_context: int = 256, kv_positions: int | None = None) -> GenerationService:
    engine = _Engine()
    engine.positions = kv_positions or max_context
    return GenerationService(engine, tokenizer, InferenceSettings(AION_MAX_NEW_TOKENS=512),  # type: ignore[arg-type]
                             _NoAdapters(), max_context)  # type: ignore[arg-type]


def build(svc: GenerationService, messages: list[dict[str, str]], max_new: int | None):
    return svc.build(messages, model=None, max_new_tokens=max_new, temperature=0, top_p=None, stop=None, seed=None)


def test_left_out_max_tokens_takes_what_the_context_leaves(tokenizer) -> None:
    svc = service(tokenizer)
    long = [{"role": "user", "content": "lighthouse " * 200}]
    request = build(svc, long, None)
    assert request.params.max_new_tokens == 256 - len(request.prompt_ids) < 512
    assert request.weights_version == 3
    with pytest.raises(BadRequest, match="left for the answer"):
        build(svc, long, 100)
    short = build(svc, [{"role": "user", "content": "hi"}], None)
    assert short.params.max_new_tokens == 256 - len(short.prompt_ids)  # below the 512 cap: all that is left
    with pytest.raises(BadRequest, match="left for the answer"):
        build(svc, [{"role": "user", "content": "lighthouse " * 400}], None)
    # A KV budget smaller than the context bounds a request the same way, before it is queued.
    small = service(tokenizer, max_context=2048, kv_positions=128)
    assert build(small, [{"role": "user", "content": "hi"}], None).params.max_new_tokens < 128
    with pytest.raises(BadRequest, match="AION_KV_CACHE_MB"):
        build(small, long, 10)


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(tokenizer) -> None:
    gemma_like = copy.deepcopy(tokenizer)
    gemma_like.chat_template = NO_SYSTEM_TEMPLATE
    assert accepts_system_role(tokenizer) and not accepts_system_role(gemma_like)
    svc = service(gemma_like, max_context=2048)
    request = build(svc, [{"role": "system", "content": "Answer in French."},
                          {"role": "user", "content": "What is the capital of Italy?"}], 16)
    text = gemma_like.decode(request.prompt_ids)
    assert "<start_of_turn>user\nAnswer in French.\n\nWhat is the capital of Italy?<end_of_turn>" in text
    assert "system" not in text


def test_the_dtype_follows_the_device_and_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from services.inference import loader

    assert loader.compute_dtype("cpu") is torch.float32
    assert loader.compute_dtype("cpu", "bfloat16") is torch.bfloat16
    # A GPU without bf16 (T4, V100, RTX 20xx) gets fp16; one with it, bf16. The capability query is the
    # one thing stood in for here: this machine has no GPU.
    monkeypatch.setattr(torch.cuda, "device", lambda device: _NullContext())
    for supported, expected in ((False, torch.float16), (True, torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, s=supported: s)
        assert loader.compute_dtype("cuda:1") is expected


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
