"""One client for any OpenAI-compatible Chat Completions API: the local inference service or the fallback.

The gateway speaks only this dialect to models, so vLLM, TGI or Ollama can replace the local service
by changing one URL.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import openai


class ChatUnavailable(Exception):
    """The model endpoint failed, timed out or refused; the caller decides what happens next."""


class ContextOverflow(ChatUnavailable):
    """The model refused the prompt as longer than its context: no other model should silently take it."""


# How servers word a too-long prompt: AION's inference ("the prompt has N tokens and the context holds M"),
# vLLM and OpenAI ("maximum context length is N tokens").
_OVERFLOW = re.compile(r"tokens but only|context holds|context length|context window|too many tokens", re.IGNORECASE)


@dataclass
class ChatDelta:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's streamed tool-call pieces, as received


def merge_tool_calls(calls: list[dict[str, Any]], pieces: list[dict[str, Any]]) -> None:
    """Add streamed tool-call pieces to the whole calls (by index: id and name first, then arguments)."""
    for piece in pieces:
        index = piece.get("index", 0)
        while len(calls) <= index:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call, fn = calls[index], piece.get("function") or {}
        call["id"] = piece.get("id") or call["id"]
        call["function"]["name"] = fn.get("name") or call["function"]["name"]
        call["function"]["arguments"] += fn.get("arguments") or ""


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str


ModelFn = Callable[[], Awaitable[str]]
RestoreFn = Callable[[str], Awaitable[bool]]

logger = logging.getLogger(__name__)


class ChatClient:
    """`model` is the name sent; `model_for`, when given, chooses it per request instead (vLLM: the active
    adapter), and `restore` gets one chance to bring back a model the server answers 404 for."""

    # A context length learnt from the server is trusted this long (a restart may serve another model);
    # after a failed lookup the server is asked again only after RETRY_S (a down server costs no time twice).
    CONTEXT_TTL_S = 300.0
    CONTEXT_RETRY_S = 30.0

    def __init__(self, *, base_url: str, api_key: str | None, model: str, timeout_s: float,
                 max_retries: int, request_id_header: str = "x-request-id", model_for: ModelFn | None = None,
                 restore: RestoreFn | None = None) -> None:
        self.model = model
        self.base_url = base_url
        self._header = request_id_header
        self._model_for = model_for
        self._restore = restore
        self._context: tuple[float, int | None] | None = None
        # The openai client retries 429/5xx/connection errors with backoff; timeouts are per request.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused",
                                          timeout=timeout_s, max_retries=max_retries)

    async def close(self) -> None:
        await self._client.close()

    def _headers(self, request_id: str | None) -> dict[str, str]:
        return {self._header: request_id} if request_id else {}

    async def context_window(self) -> int | None:
        """The served model's context length from `/v1/models` (`max_model_len`, as vLLM and AION give it)."""
        now = time.monotonic()
        if self._context and now - self._context[0] < self.CONTEXT_TTL_S:
            return self._context[1]
        window: int | None = None
        try:
            page = await self._client.models.list()
            cards = list(page.data)
            card = next((c for c in cards if c.id == self.model), cards[0] if cards else None)
            value = getattr(card, "max_model_len", None) if card else None
            window = int(value) if value else None
        except (openai.OpenAIError, ValueError, TypeError) as exc:
            logger.info("%s/models did not give a context length: %s", self.base_url, exc)
            self._context = (now - self.CONTEXT_TTL_S + self.CONTEXT_RETRY_S, None)
            return None
        self._context = (now, window)
        return window

    async def _create(self, chosen: str | None = None, **kwargs: Any) -> tuple[str, Any]:
        """The model chosen for this request (`chosen`, else the client's own), and the server's answer (a
        stream when kwargs ask for one)."""
        try:
            model = chosen or (await self._model_for() if self._model_for else self.model)
        except Exception as exc:  # the registry or the server's model list: the local model is unavailable
            raise ChatUnavailable(f"could not choose the model: {exc}") from exc
        try:
            try:
                return model, await self._client.chat.completions.create(model=model, **kwargs)
            except openai.NotFoundError:
                if not (self._restore and await self._restore(model)):
                    raise
            return model, await self._client.chat.completions.create(model=model, **kwargs)
        except openai.OpenAIError as exc:
            raise _unavailable(exc) from exc
        except Exception as exc:  # restoring failed: the backend refused or is down, or the registry is
            raise ChatUnavailable(f"model '{model}' is not loaded and could not be restored: {exc}") from exc

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                       request_id: str | None = None, frequency_penalty: float | None = None) -> ChatResult:
        model, resp = await self._create(
            messages=messages, max_tokens=max_tokens, temperature=temperature,
            extra_headers=self._headers(request_id), **_penalty(frequency_penalty))
        choice = resp.choices[0] if resp.choices else None
        return ChatResult(text=(choice.message.content or "") if choice else "",
                          finish_reason=choice.finish_reason if choice else None,
                          prompt_tokens=resp.usage.prompt_tokens if resp.usage else None,
                          completion_tokens=resp.usage.completion_tokens if resp.usage else None,
                          model=resp.model or model)

    async def stream(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                     request_id: str | None = None, frequency_penalty: float | None = None,
                     output: Mapping[str, Any] | None = None, model: str | None = None) -> AsyncIterator[ChatDelta]:
        """Yield text (or tool-call) deltas, then one delta carrying usage if the server sends it.

        `output` holds the caller's OpenAI output fields (tools, tool_choice, response_format), sent as given;
        `model` names the model or adapter this request asks for instead of the client's default.
        """
        model, stream = await self._create(
            model, messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True,
            stream_options={"include_usage": True}, extra_headers=self._headers(request_id),
            **_penalty(frequency_penalty), **(output or {}))
        try:
            async for chunk in stream:
                if getattr(chunk, "error", None):
                    raise ChatUnavailable(f"stream error from {self.base_url}: {chunk.error}")  # type: ignore[attr-defined]
                delta = ChatDelta(model=chunk.model or model)
                if chunk.choices:
                    delta.text = chunk.choices[0].delta.content or ""
                    delta.finish_reason = chunk.choices[0].finish_reason
                    calls = chunk.choices[0].delta.tool_calls
                    delta.tool_calls = [c.model_dump(exclude_none=True) for c in calls] if calls else None
                if chunk.usage:
                    delta.prompt_tokens = chunk.usage.prompt_tokens
                    delta.completion_tokens = chunk.usage.completion_tokens
                if delta.text or delta.tool_calls or delta.finish_reason or delta.prompt_tokens is not None:
                    yield delta
        except openai.OpenAIError as exc:
            raise ChatUnavailable(_describe(exc)) from exc
        except (ValueError, KeyError, httpx.HTTPError) as exc:  # a malformed or cut stream
            raise ChatUnavailable(f"broken stream from {self.base_url}: {exc}") from exc
        finally:
            await stream.close()


def _describe(exc: openai.OpenAIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {exc.__cause__ or exc}"
    return str(exc)


def _unavailable(exc: openai.OpenAIError) -> ChatUnavailable:
    message = _describe(exc)
    if isinstance(exc, openai.BadRequestError) and _OVERFLOW.search(message):
        return ContextOverflow(message)
    return ChatUnavailable(message)


def _penalty(frequency_penalty: float | None) -> dict[str, float]:
    """Sent only when set: some OpenAI-compatible servers reject fields they do not know."""
    return {} if frequency_penalty is None else {"frequency_penalty": frequency_penalty}
