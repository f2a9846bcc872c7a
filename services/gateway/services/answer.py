"""The answer router (the seed's answerPreferLocal): retrieve, decide local or fallback, stream, log.

It yields events; routes turn them into SSE, a JSON body or OpenAI chunks. Whatever happens — a
broken stream, a client that leaves, a failed provider — exactly one `answer` event is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from shared.errors import AionError

from ..clients.chat import ChatClient, ChatUnavailable, merge_tool_calls
from .budget import BudgetGuard, Denial, Reservation
from .pricing import Price, estimate_messages_tokens, estimate_tokens, price_for
from .prompt import PromptPassage, build_rag_messages, source_label

logger = logging.getLogger(__name__)

EventType = Literal["sources", "warn", "token", "tool_call", "done", "error"]


@dataclass
class AnswerEvent:
    type: EventType
    data: dict[str, Any]


@dataclass(frozen=True)
class SourcePassage:
    """What retrieval hands the answer path (one chosen passage)."""

    chunk_id: str
    document_id: str
    title: str
    page_or_heading: str | None
    text: str
    score: float


@dataclass(frozen=True)
class RetrievedContext:
    passages: Sequence[SourcePassage]
    confidence: float


@dataclass(frozen=True)
class AnswerRequest:
    question: str
    tenant_id: str
    request_id: str
    tau: float
    force_fallback: bool = False
    history: Sequence[dict[str, str]] = ()
    output: dict[str, Any] = field(default_factory=dict)  # OpenAI tools/tool_choice/response_format, passed on


@dataclass(frozen=True)
class AnswerPolicy:
    system_prompt: str
    local_max_tokens: int
    local_temperature: float
    local_frequency_penalty: float
    fallback_max_tokens: int
    fallback_temperature: float
    prices: dict[str, tuple[float, float]]
    unknown_price: tuple[float, float]


RetrieveFn = Callable[[str, str], Awaitable[RetrievedContext]]      # (tenant_id, question)
LogEventFn = Callable[[str, str, float, dict[str, Any], str], Awaitable[None]]  # (tenant, kind, value, meta, rid)
ObserveFn = Callable[[dict[str, Any]], None]  # the answer event's meta, for in-memory metrics


@dataclass
class _Outcome:
    used: str | None = None
    model: str | None = None
    parts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    complete: bool = False
    first_token_ms: int | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class AnswerService:
    def __init__(self, *, retrieve: RetrieveFn, log_event: LogEventFn, local: ChatClient,
                 fallback: ChatClient | None, budget: BudgetGuard, policy: AnswerPolicy,
                 on_answer: ObserveFn | None = None) -> None:
        self.retrieve = retrieve
        self.on_answer = on_answer
        self.log_event = log_event
        self.local = local
        self.fallback = fallback
        self.budget = budget
        self.policy = policy

    async def run(self, req: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        started = time.perf_counter()
        out = _Outcome()
        context: RetrievedContext | None = None
        passages: list[PromptPassage] = []
        try:
            context = await self.retrieve(req.tenant_id, req.question)
            passages = [PromptPassage(n=i + 1, text=p.text, source=source_label(p.title, p.page_or_heading))
                        for i, p in enumerate(context.passages)]
            yield AnswerEvent("sources", {"sources": [
                {"n": i + 1, "document": p.document_id, "chunk": p.chunk_id, "title": p.title,
                 "page_or_heading": p.page_or_heading, "score": round(p.score, 4), "text": p.text}
                for i, p in enumerate(context.passages)], "C": round(context.confidence, 4)})
            messages = build_rag_messages(req.question, passages, system_prompt=self.policy.system_prompt,
                                          history=req.history)
            async for event in self._route(req, context.confidence, messages, out, started):
                yield event
        except ChatUnavailable as exc:  # nothing could answer
            out.error = str(exc)
            yield AnswerEvent("error", {"message": out.error, "request_id": req.request_id})
        except AionError as exc:  # an expected condition (database or embeddings down): its message says what to do
            logger.warning("answer failed: %s", exc.message)
            out.error = exc.message
            yield AnswerEvent("error", {"message": exc.message, "code": exc.code, "request_id": req.request_id})
        except Exception as exc:
            logger.exception("answer failed")
            out.error = f"{type(exc).__name__}: {exc}"
            yield AnswerEvent("error", {"message": "the answer failed: " + out.error, "request_id": req.request_id})
        finally:
            # Shielded: a client that went away cancels the generation, never the record of it.
            with anyio.CancelScope(shield=True):
                await self._log_answer(req, context, out, started)
        if out.complete:
            yield AnswerEvent("done", self._done_payload(req, context, out, started))

    def _done_payload(self, req: AnswerRequest, context: RetrievedContext | None, out: _Outcome,
                      started: float) -> dict[str, Any]:
        return {"used": out.used, "model": out.model, "C": round(context.confidence, 4) if context else None,
                "request_id": req.request_id, "warnings": out.warnings,
                "latency_ms": int((time.perf_counter() - started) * 1000),
                "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                          "estimated": out.usage_estimated, "cost_usd": round(out.cost_usd, 6)}}

    # -- routing ---------------------------------------------------------------------------------
    async def _route(self, req: AnswerRequest, confidence: float, messages: list[dict[str, str]],
                     out: _Outcome, started: float) -> AsyncIterator[AnswerEvent]:
        wants_fallback = req.force_fallback or confidence < req.tau
        if confidence < req.tau:
            out.warnings.append("low_confidence")
            yield AnswerEvent("warn", {"reason": "low_confidence", "C": round(confidence, 4), "tau": req.tau})
        reservation: Reservation | Denial | None = None
        fallback_tried = False
        if wants_fallback:
            reservation = await self._reserve(req, messages)
            if isinstance(reservation, Denial):
                out.warnings.append(reservation.reason)
                yield AnswerEvent("warn", {"reason": reservation.reason, "message": reservation.message})
            else:
                fallback_tried, ok = True, False
                async for event in self._stream_fallback(req, reservation, messages, out, started):
                    yield event
                    ok = ok or event.type == "token"
                if out.complete:
                    return
                out.warnings.append("fallback_failed")
                yield AnswerEvent("warn", {"reason": "fallback_failed", "message": out.error, "restart": ok})
                out.parts.clear()
                out.tool_calls.clear()
                out.error = None
        # The local model: free, so never blocked by the budget.
        try:
            async for event in self._stream_local(req, messages, out, started):
                yield event
            return
        except ChatUnavailable as exc:
            had_text = bool(out.parts)
            message = f"the local model failed: {exc}"
            logger.warning("%s", message)
        out.warnings.append("local_unavailable")
        if reservation is None:
            reservation = await self._reserve(req, messages)
        if isinstance(reservation, Reservation) and not fallback_tried:
            yield AnswerEvent("warn", {"reason": "local_unavailable", "message": message, "restart": had_text})
            out.parts.clear()
            out.tool_calls.clear()
            async for event in self._stream_fallback(req, reservation, messages, out, started):
                yield event
            if out.complete:
                return
            raise ChatUnavailable(f"{message}; the fallback failed too: {out.error}")
        why = reservation.message if isinstance(reservation, Denial) else "the fallback already failed"
        yield AnswerEvent("warn", {"reason": "local_unavailable", "message": message})
        raise ChatUnavailable(f"{message}; no fallback: {why}")

    async def _reserve(self, req: AnswerRequest, messages: list[dict[str, str]]) -> Reservation | Denial:
        if self.fallback is None:
            return Denial("fallback_disabled", "no fallback is configured (set OPENAI_API_KEY or "
                                               "AION_FALLBACK_BASE_URL)")
        price = self._price(self.fallback.model)
        return await self.budget.reserve(
            tenant_id=req.tenant_id, request_id=req.request_id, model=self.fallback.model, price=price,
            prompt_tokens=estimate_messages_tokens(messages), max_completion_tokens=self.policy.fallback_max_tokens)

    def _price(self, model: str) -> Price:
        return price_for(model, self.policy.prices, self.policy.unknown_price)

    async def _stream_local(self, req: AnswerRequest, messages: list[dict[str, str]], out: _Outcome,
                            started: float) -> AsyncIterator[AnswerEvent]:
        out.used, out.model = "local", self.local.model
        async for delta in self.local.stream(messages, max_tokens=self.policy.local_max_tokens,
                                             temperature=self.policy.local_temperature,
                                             frequency_penalty=self.policy.local_frequency_penalty or None,
                                             request_id=req.request_id, output=req.output):
            out.model = delta.model or out.model  # the adapter version that really served it
            if delta.tool_calls:
                merge_tool_calls(out.tool_calls, delta.tool_calls)
                yield AnswerEvent("tool_call", {"tool_calls": delta.tool_calls})
            if delta.text:
                out.parts.append(delta.text)
                out.first_token_ms = out.first_token_ms or int((time.perf_counter() - started) * 1000)
                yield AnswerEvent("token", {"text": delta.text})
            if delta.prompt_tokens is not None:
                out.prompt_tokens, out.completion_tokens = delta.prompt_tokens, delta.completion_tokens or 0
        out.complete = True

    async def _stream_fallback(self, req: AnswerRequest, reservation: Reservation, messages: list[dict[str, str]],
                               out: _Outcome, started: float) -> AsyncIterator[AnswerEvent]:
        """Stream from the paid model; settle the reservation whatever happens."""
        assert self.fallback is not None
        out.used, out.model = "fallback", reservation.model
        parts: list[str] = []
        usage: tuple[int, int] | None = None
        failed: str | None = None
        try:
            async for delta in self.fallback.stream(messages, max_tokens=self.policy.fallback_max_tokens,
                                                    temperature=self.policy.fallback_temperature,
                                                    request_id=req.request_id, output=req.output):
                if delta.tool_calls:
                    merge_tool_calls(out.tool_calls, delta.tool_calls)
                    yield AnswerEvent("tool_call", {"tool_calls": delta.tool_calls})
                if delta.text:
                    parts.append(delta.text)
                    out.parts.append(delta.text)
                    out.first_token_ms = out.first_token_ms or int((time.perf_counter() - started) * 1000)
                    yield AnswerEvent("token", {"text": delta.text})
                if delta.prompt_tokens is not None:
                    usage = (delta.prompt_tokens, delta.completion_tokens or 0)
            out.complete = True
        except ChatUnavailable as exc:
            failed = str(exc)
            out.error = f"the fallback failed: {exc}"
        finally:
            estimated = usage is None
            if usage is None:  # the provider sent none (or the stream broke): bill an over-estimate
                text = "".join(parts)
                usage = (estimate_messages_tokens(messages) if text else 0, estimate_tokens(text) if text else 0)
            status = "failed" if failed or not out.complete else "settled"
            prompt_tokens, completion_tokens = usage

            async def record() -> float:
                cost = await self.budget.settle(reservation, prompt_tokens=prompt_tokens,
                                          completion_tokens=completion_tokens, usage_estimated=estimated,
                                          failed=status == "failed", error=failed)
                await self.log_event(req.tenant_id, "fallback", cost, {
                    "model": reservation.model, "status": status, "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens, "estimated": estimated, "error": failed},
                    req.request_id)
                return cost

            with anyio.CancelScope(shield=True):
                out.cost_usd = await record()
            out.prompt_tokens, out.completion_tokens, out.usage_estimated = prompt_tokens, completion_tokens, estimated

    # -- the record ----------------------------------------------------------------------------------
    async def _log_answer(self, req: AnswerRequest, context: RetrievedContext | None, out: _Outcome,
                    started: float) -> None:
        meta = {
            "prompt": req.question, "reply": "".join(out.parts), "used": out.used, "source": out.used,
            "model": out.model, "C": round(context.confidence, 4) if context else None, "tau": req.tau,
            "forced": req.force_fallback, "complete": out.complete, "error": out.error,
            "warnings": out.warnings, "latency_ms": int((time.perf_counter() - started) * 1000),
            "tool_calls": out.tool_calls,
            "first_token_ms": out.first_token_ms, "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens, "cost_usd": round(out.cost_usd, 6),
            "sources": [{"document": p.document_id, "chunk": p.chunk_id, "score": round(p.score, 4)}
                        for p in (context.passages if context else [])],
            "history_turns": len(req.history),
        }
        if self.on_answer:  # before the write: metrics count answers whose record the database refused too
            self.on_answer(meta)
        try:
            await self.log_event(req.tenant_id, "answer", 1.0 if out.complete else 0.0, meta, req.request_id)
        except Exception:
            logger.exception("could not log the answer event for request %s", req.request_id)
