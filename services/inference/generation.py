"""From API requests to engine requests: chat template, limits, adapter choice; and collecting output."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from shared.errors import AionError, BadRequest
from shared.protocol.openai import ChatCompletionRequest

from .adapters import AdapterManager
from .engine import Engine, FinishReason, GenerationRequest, SamplingParams, StreamEvent
from .engine.constraints import GrammarCompiler
from .engine.core import Handle
from .engine.types import TokenConstraint
from .settings import InferenceSettings
from .structured import OutputPlan, compile_plan, plan_output
from .tools import (
    ToolCallReader,
    chat_messages,
    syntax_for,
    template_renders_tools,
    template_source,
    template_tools,
)

logger = logging.getLogger(__name__)


class InvalidLimit(AionError):
    status_code = 422
    code = "invalid_value"
    error_type = "invalid_request_error"


class GenerationFailed(AionError):
    status_code = 500
    code = "generation_failed"


def accepts_system_role(tokenizer: Any) -> bool:
    """Whether the chat template renders a system message (Gemma's and older Mistral's refuse one)."""
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False, add_generation_prompt=True)
    except Exception:
        return False
    return True


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For templates without a system role: the system text goes first in the first user message."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"].strip())
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        for message in rest:
            if message["role"] == "user":
                message["content"] = f"{system}\n\n{message['content']}"
                break
    return rest


@dataclass
class ChatJob:
    """An OpenAI chat request made ready for the engine, and how to read its output back."""

    request: GenerationRequest
    plan: OutputPlan
    reader: ToolCallReader | None  # None: the output is plain content


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ms: int
    adapter: str | None


class GenerationService:
    def __init__(self, engine: Engine, tokenizer: Any, settings: InferenceSettings, adapters: AdapterManager,
                 max_context: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings
        self.adapters = adapters
        self.max_context = max_context
        self.tool_syntax = syntax_for(tokenizer)
        self.native_tools = template_renders_tools(tokenizer)
        self.grammars: GrammarCompiler | None = None
        self.grammars_unavailable: str | None = None
        runner = engine.runner
        try:
            vocab = max(int(runner.config.vocab_size), len(tokenizer))
            self.grammars = GrammarCompiler(tokenizer, vocab, runner.eos_ids)
        except Exception as exc:  # e.g. a slow (Python) tokenizer: plain chat still works
            self.grammars_unavailable = f"{type(exc).__name__}: {exc}"
            logger.warning("structured output unavailable: %s", self.grammars_unavailable)
        self.system_role = accepts_system_role(tokenizer)
        if not self.system_role:
            logger.info("the chat template has no system role: system text goes into the first user message")

    def native_messages(self, prompt: str, system: str | None, context: str | None) -> list[dict[str, str]]:
        """The seed's {system, context, prompt} as chat-template messages."""
        system_text = (system or self.settings.system_prompt).strip()
        if context and context.strip():
            system_text = f"{system_text}\n\nContexto:\n{context.strip()}"
        return [{"role": "system", "content": system_text}, {"role": "user", "content": prompt}]

    def build_chat(self, body: ChatCompletionRequest) -> ChatJob:
        """An OpenAI chat request as an engine request: tools rendered, output constrained as asked."""
        refusal = body.refusal()
        if refusal:
            raise BadRequest(refusal[1], param=refusal[0])
        plan = plan_output(body, self.tool_syntax)
        native = self.native_tools and bool(plan.tools)
        messages = chat_messages(body.messages, self.settings.system_prompt, tools=plan.tools,
                                 native_tools=self.native_tools, syntax=self.tool_syntax, may_answer=plan.may_answer)
        constraint = compile_plan(plan, self.grammars, self.grammars_unavailable)
        request = self.build(messages, model=body.model, max_new_tokens=body.requested_max_tokens(),
                             temperature=body.temperature, top_p=body.top_p, stop=body.stop,  # type: ignore[arg-type]
                             seed=body.seed, frequency_penalty=body.frequency_penalty,
                             presence_penalty=body.presence_penalty,
                             tools=template_tools(plan.tools) if native else None, constraint=constraint)
        reader = ToolCallReader(self.tool_syntax, plan.call_names) if plan.call_names else None
        return ChatJob(request=request, plan=plan, reader=reader)

    def build(self, messages: list[dict[str, Any]], *, model: str | None, max_new_tokens: int | None,
              temperature: float | None, top_p: float | None, stop: list[str] | None,
              seed: int | None, frequency_penalty: float | None = None,
              presence_penalty: float | None = None, ignore_eos: bool = False,
              tools: list[dict[str, Any]] | None = None,
              constraint: TokenConstraint | None = None) -> GenerationRequest:
        adapter = self.adapters.resolve(model)
        limit = self.settings.max_new_tokens
        if max_new_tokens is not None and not 1 <= max_new_tokens <= limit:
            raise InvalidLimit(f"max_new_tokens must be between 1 and {limit} (AION_MAX_NEW_TOKENS); "
                               f"got {max_new_tokens}")
        if not any(m["content"].strip() for m in messages if m["role"] in ("user", "tool")):
            raise BadRequest("the request has no user message with text")
        if not self.system_role:
            messages = fold_system(messages)
        prompt_ids = self._render(messages, tools)
        holds = self.engine.max_request_positions()
        what = "the context" if holds >= self.max_context else "the KV cache budget (AION_KV_CACHE_MB)"
        room = holds - len(prompt_ids)
        # Left out, max_new_tokens is what the context leaves, up to AION_MAX_NEW_TOKENS (as vLLM does).
        max_new = min(limit, room) if max_new_tokens is None else max_new_tokens
        if max_new > room or room < 1:
            raise BadRequest(f"the prompt has {len(prompt_ids)} tokens and {what} holds {holds}: "
                             f"{max(room, 0)} are left for the answer, and {max_new} were asked; shorten the "
                             "prompt or ask for fewer new tokens")
        temp = self.settings.temperature if temperature is None else temperature
        params = SamplingParams(max_new_tokens=max_new, temperature=temp,
                                top_p=self.settings.top_p if top_p is None else top_p,
                                seed=seed, stop=tuple(stop or ()),
                                frequency_penalty=_or(frequency_penalty, self.settings.frequency_penalty),
                                presence_penalty=_or(presence_penalty, self.settings.presence_penalty),
                                ignore_eos=ignore_eos)
        return GenerationRequest(prompt_ids=list(prompt_ids), params=params, adapter=adapter,
                                 weights_version=self.engine.weights_version, constraint=constraint)

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        if template_source(self.tokenizer) is None:
            raise BadRequest(f"the model '{self.settings.base_model}' has no chat template, so it cannot take chat "
                             "messages or tools; serve an instruct model that has one (AION_BASE_MODEL)")
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                      tokenize=True, return_dict=True)["input_ids"]
        except TemplateError as exc:
            what = "the tools and messages" if tools else "the messages"
            raise BadRequest(f"the model's chat template cannot render {what}: {exc}") from exc

    def submit(self, request: GenerationRequest) -> Handle:
        """Queue now, so that a full queue is a 503 before any response starts (streams included)."""
        return self.engine.submit(request)

    def events(self, handle: Handle) -> AsyncIterator[StreamEvent]:
        return self.engine.events(handle)

    async def complete(self, request: GenerationRequest) -> Completion:
        started = time.perf_counter()
        parts: list[str] = []
        final: StreamEvent | None = None
        async for event in self.engine.stream(request):
            parts.append(event.text)
            if event.finished is not None:
                final = event
        assert final is not None
        if final.finished is FinishReason.ERROR:
            raise GenerationFailed(final.error or "generation failed", status_code=final.error_status or 500)
        return Completion(text="".join(parts), finish_reason=final.finished.value,
                          prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens,
                          ms=int((time.perf_counter() - started) * 1000), adapter=request.adapter)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
