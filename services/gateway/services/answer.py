"""The answer router (the seed's answerPreferLocal): retrieve, decide local or fallback, stream, check, log.

It yields events; routes turn them into SSE, a JSON body or OpenAI chunks. Whatever happens — a
broken stream, a client that leaves, a failed provider — exactly one `answer` event is logged.

A follow-up is rewritten into a standalone question before retrieval; the prompt is fitted to the
model's context (passages first, then as much recent history as fits); a local answer is checked
against its passages, and one they do not back is re-answered by the budgeted fallback or replaced
by the passages' own sentences, quoted. Below τ with no fallback, the answer says plainly that the
documents do not seem to cover the question, and quotes the closest passages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from shared.errors import AionError

from ..clients.chat import ChatClient, ChatUnavailable, ContextOverflow, merge_tool_calls
from .answer_record import model_input
from .budget import BudgetGuard, Denial, Reservation
from .citations import CitationCheck
from .context_fit import ChatTokens, PromptBudget, PromptTooLong, fit_history, fit_passages
from .conversations import ConversationRef, ConversationStore
from .language import Language, choose_language
from .pricing import Price, estimate_messages_tokens, estimate_tokens, price_for
from .prompt import PromptPassage, build_rag_messages, source_label
from .response_cache import Probe, ResponseCache
from .retrieval import Passage
from .rewrite import QuestionRewriter, Rewrite
from .support import Evidence, measure_support, not_found_answer, quoted_answer

logger = logging.getLogger(__name__)

EventType = Literal["sources", "warn", "token", "tool_call", "done", "error"]
# What the text is: a model's answer, the passages' own sentences, or "the documents do not cover it".
AnswerKind = Literal["generated", "quoted", "not_found"]
# The context assumed when the model server does not say (vLLM and AION give it in /v1/models).
DEFAULT_CONTEXT_WINDOW = 2048


@dataclass
class AnswerEvent:
    type: EventType
    data: dict[str, Any]


@dataclass(frozen=True)
class RetrievedContext:
    passages: Sequence[Passage]  # retrieval's own passages, best first: no copy into another type
    confidence: float
    # `warn` payloads from retrieval ({"reason", "message"}), e.g. embeddings_unavailable: sent first.
    warnings: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class AnswerRequest:
    question: str
    tenant_id: str
    request_id: str
    tau: float
    force_fallback: bool = False
    history: Sequence[dict[str, str]] = ()
    # The caller's X-Request-ID (or the middleware's): model calls carry it, so one trace id follows the
    # question through every service's log; it is never the answer's id.
    correlation_id: str | None = None
    conversation: ConversationRef | None = None
    # `warn` events decided before answering (e.g. an option this key may not use), sent first.
    notices: Sequence[dict[str, Any]] = ()
    # Who asks ("key:<uuid>"; None with AION_AUTH=off): the budget's per-key share is counted by it.
    caller: str | None = None
    # False: neither read nor fill the response cache (an evaluation measures the models, not the cache).
    use_cache: bool = True
    output: dict[str, Any] = field(default_factory=dict)  # OpenAI tools/tool_choice/response_format, passed on
    # The local model or adapter the conversation chose (the name sent); None: the server's default.
    model: str | None = None


@dataclass(frozen=True)
class AnswerPolicy:
    personas: dict[Language, str]  # the system prompt's opening, per language
    local_max_tokens: int
    local_temperature: float
    local_frequency_penalty: float
    fallback_max_tokens: int
    fallback_temperature: float
    prices: dict[str, tuple[float, float]]
    unknown_price: tuple[float, float]
    language: Language | None = None  # pinned; None: the question's
    default_language: Language = "pt"  # when neither the question nor its passages tell
    max_passages: int = 3
    passage_tokens: int = 600
    context_window: int | None = None  # None: what the model server says
    support_threshold: float = 0.6
    check_citations: bool = True
    low_confidence_local: bool = False  # below τ with no fallback, let the local model try anyway
    log_max_chars: int = 64_000  # AION_ANSWER_LOG_MAX_CHARS: the messages an answer event may hold


# (tenant_id, query, *, original=None, request_id=None): the retrieval event is logged under the answer's id.
RetrieveFn = Callable[..., Awaitable[RetrievedContext]]
LogEventFn = Callable[[str, str, float, dict[str, Any], str], Awaitable[None]]  # (tenant, kind, value, meta, rid)
ObserveFn = Callable[[dict[str, Any]], None]  # the answer event's meta, for in-memory metrics


@dataclass
class _Outcome:
    used: str | None = None
    model: str | None = None
    kind: AnswerKind = "generated"
    parts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    error_status: int | None = None
    complete: bool = False
    first_token_ms: int | None = None
    finish_reason: str | None = None  # "length": cut off at max_tokens
    support: float | None = None
    language: Language | None = None
    rewrite: Rewrite | None = None
    history_dropped: int = 0
    passages: list[PromptPassage] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)  # exactly what the answering model got
    cache: dict[str, Any] | None = None  # set when the answer came from the response cache
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    citations_corrected: int = 0  # citation marks renumbered or dropped (services/citations.py)


def source_item(n: int, passage: Passage) -> dict[str, Any]:
    """A passage as the `sources` event, the chat response (SourceOut) and a conversation turn show it."""
    return {"n": n, "document": str(passage.document_id), "chunk": str(passage.chunk_id),
            "title": passage.title or passage.source_name, "page_or_heading": passage.page_or_heading,
            "score": round(passage.score, 4), "text": passage.text,
            # a web page's address, for citations that link to it
            "url": passage.source_name if passage.source_name.startswith(("http://", "https://")) else None}


class AnswerService:
    def __init__(self, *, retrieve: RetrieveFn, log_event: LogEventFn, local: ChatClient,
                 fallback: ChatClient | None, budget: BudgetGuard, policy: AnswerPolicy, tokens: ChatTokens,
                 rewriter: QuestionRewriter | None = None, conversations: ConversationStore | None = None,
                 on_answer: ObserveFn | None = None, cache: ResponseCache | None = None) -> None:
        self.retrieve = retrieve
        self.cache = cache if cache and cache.enabled else None
        self.on_answer = on_answer
        self.log_event = log_event
        self.local = local
        self.fallback = fallback
        self.budget = budget
        self.policy = policy
        self.tokens = tokens
        self.rewriter = rewriter
        self.conversations = conversations

    async def run(self, req: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        """Replay the cached answer to this question, or answer it and keep the answer when it is done."""
        probe = await self._probe(req)
        if probe is not None and probe.hit is not None:
            async for event in self._replay(req, probe):
                yield event
            return
        out = _Outcome()
        sources: dict[str, Any] = {}
        warns: list[dict[str, Any]] = []
        async for event in self._answer(req, out):
            if event.type == "sources":
                sources = event.data
            elif event.type == "warn" and not event.data.get("restart") and event.data not in req.notices:
                warns.append(event.data)  # a restart's notice belongs to the text it threw away
            yield event
            if event.type == "done" and probe is not None:
                await self._remember(req, probe, out, sources, warns, event.data)

    async def _answer(self, req: AnswerRequest, out: _Outcome) -> AsyncIterator[AnswerEvent]:
        started = time.perf_counter()
        context: RetrievedContext | None = None
        try:
            for notice in req.notices:
                out.warnings.append(notice["reason"])
                yield AnswerEvent("warn", dict(notice))
            query = req.question
            if req.history and self.rewriter:
                language = self._language(req.question, *(t["content"] for t in req.history if t["role"] == "user"))
                out.rewrite = await self.rewriter.rewrite(req.question, req.history, language,
                                                          request_id=req.correlation_id or req.request_id)
                query = out.rewrite.question
            context = await self.retrieve(req.tenant_id, query, request_id=req.request_id,
                                          original=req.question if query != req.question else None)
            budget = await self._prompt_budget()
            texts = fit_passages([p.text for p in context.passages], budget, self.tokens)
            out.passages = [PromptPassage(n=i + 1, text=text, source=source_label(p.title or p.source_name,
                                                                                    p.page_or_heading))
                            for i, (p, text) in enumerate(zip(context.passages, texts, strict=False))]
            out.sources = [source_item(i + 1, p) for i, p in enumerate(context.passages[:len(texts)])]
            out.language = self._language(req.question, *texts)
            yield AnswerEvent("sources", {"sources": out.sources, "C": round(context.confidence, 4),
                                          **self._conversation_fields(req, out)})
            for warning in context.warnings:
                out.warnings.append(warning["reason"])
                yield AnswerEvent("warn", dict(warning))
            persona = self.policy.personas[out.language]
            messages, out.history_dropped = fit_history(
                lambda kept: build_rag_messages(req.question, out.passages, language=out.language or "pt",
                                                persona=persona, history=kept),
                req.history, budget, self.tokens)
            if out.history_dropped:
                out.warnings.append("history_trimmed")
                yield AnswerEvent("warn", {"reason": "history_trimmed", "dropped_turns": out.history_dropped,
                                           "message": f"the {out.history_dropped} oldest turns of the conversation "
                                                      "do not fit the model's context and were left out"})
            async for event in self._route(req, context.confidence, messages, out, started):
                yield event
        except ChatUnavailable as exc:  # nothing could answer
            out.error = str(exc)
            yield AnswerEvent("error", {"message": out.error, "request_id": req.request_id})
        except AionError as exc:  # an expected condition (database or embeddings down): its message says what to do
            logger.warning("answer failed: %s", exc.message)
            out.error, out.error_status = exc.message, exc.status_code
            yield AnswerEvent("error", {"message": exc.message, "code": exc.code, "status": exc.status_code,
                                        "request_id": req.request_id})
        except Exception as exc:
            logger.exception("answer failed")
            out.error = f"{type(exc).__name__}: {exc}"
            yield AnswerEvent("error", {"message": "the answer failed: " + out.error, "request_id": req.request_id})
        finally:
            # Shielded: a client that went away cancels the generation, never the record of it.
            with anyio.CancelScope(shield=True):
                await self._log_answer(req, context, out, started)
                await self._record_turns(req, context, out)
        if out.complete:
            yield AnswerEvent("done", self._done_payload(req, context, out, started))

    # -- the response cache --------------------------------------------------------------------------
    async def _probe(self, req: AnswerRequest) -> Probe | None:
        """The cache's place for this question; None when the cache is off or cannot be read (then the
        question is answered as if it were not there: a cache never fails an answer)."""
        if self.cache is None or req.output or not req.use_cache:
            return None  # tools and structured output: the caller's own contract, answered afresh
        try:
            return await self.cache.probe(tenant_id=req.tenant_id, question=req.question, history=req.history,
                                          tau=req.tau, force_fallback=req.force_fallback, model=req.model)
        except Exception as exc:
            logger.warning("response cache lookup failed (answering without it): %s", exc)
            return None

    async def _remember(self, req: AnswerRequest, probe: Probe, out: _Outcome, sources: dict[str, Any],
                        warns: list[dict[str, Any]], done: dict[str, Any]) -> None:
        """Keep a finished answer as the events that replay it (what is per request is left out)."""
        notices = {n["reason"] for n in req.notices}
        warnings = [w for w in out.warnings if w not in notices]
        if self.cache is None or not self.cache.wants(out.used, out.cost_usd, warnings):
            return
        payload = {"sources": sources.get("sources", []), "C": sources.get("C"), "warns": warns,
                   "text": "".join(out.parts), "warnings": warnings,
                   "rewritten": out.rewrite.question if out.rewrite else None,
                   "rewrite_method": out.rewrite.method if out.rewrite else None,
                   **{k: done.get(k) for k in ("used", "model", "support", "answer", "language", "usage")}}
        try:
            with anyio.CancelScope(shield=True):
                await self.cache.remember(probe, payload, used=out.used or "local", model=out.model,
                                          cost_usd=out.cost_usd)
        except Exception as exc:
            logger.warning("could not store the answer of request %s in the response cache: %s", req.request_id, exc)

    async def _replay(self, req: AnswerRequest, probe: Probe) -> AsyncIterator[AnswerEvent]:
        """The stored answer as a normal stream: sources, warnings, the text, then `done` with cached: true."""
        assert probe.hit is not None
        started = time.perf_counter()
        stored = probe.hit.payload
        out = _Outcome(used=stored.get("used"), model=stored.get("model"), kind=stored.get("answer") or "generated",
                       support=stored.get("support"), language=stored.get("language"), sources=stored["sources"],
                       cache={"level": probe.level, "saved_usd": round(probe.hit.cost_usd, 6),
                              "similarity": probe.similarity})
        if stored.get("rewritten"):
            out.rewrite = Rewrite(stored["rewritten"], stored.get("rewrite_method") or "rule")
        context = RetrievedContext(passages=(), confidence=float(stored.get("C") or 0.0))
        try:
            for notice in req.notices:
                out.warnings.append(notice["reason"])
                yield AnswerEvent("warn", dict(notice))
            out.warnings.extend(stored.get("warnings") or [])
            yield AnswerEvent("sources", {"sources": out.sources, "C": stored.get("C"),
                                          **self._conversation_fields(req, out)})
            for warn in stored.get("warns") or []:
                yield AnswerEvent("warn", dict(warn))
            out.parts.append(stored["text"])
            out.first_token_ms = int((time.perf_counter() - started) * 1000)
            yield AnswerEvent("token", {"text": stored["text"]})
            out.complete = True
        finally:
            with anyio.CancelScope(shield=True):
                await self._log_answer(req, context, out, started)
                await self._record_turns(req, context, out)
        yield AnswerEvent("done", self._done_payload(req, context, out, started))

    @staticmethod
    def _cache_fields(out: _Outcome) -> dict[str, Any]:
        if out.cache is None:
            return {"cached": False}
        return {"cached": True, "cache": out.cache["level"], "saved_usd": out.cache["saved_usd"],
                **({"cache_similarity": out.cache["similarity"]} if out.cache["level"] == "semantic" else {})}

    def _language(self, question: str, *more: str) -> Language:
        """The pinned language, else the question's, else its passages' (or history's), else the default."""
        return choose_language(question, *more, pinned=self.policy.language, default=self.policy.default_language)

    async def _prompt_budget(self) -> PromptBudget:
        window = self.policy.context_window or await self.local.context_window() or DEFAULT_CONTEXT_WINDOW
        return PromptBudget.for_window(window, answer_tokens=self.policy.local_max_tokens,
                                       passage_tokens=self.policy.passage_tokens,
                                       max_passages=self.policy.max_passages)

    @staticmethod
    def _conversation_fields(req: AnswerRequest, out: _Outcome) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if req.conversation:
            fields["conversation_id"] = str(req.conversation.id)
        if out.rewrite:
            fields["rewritten"] = out.rewrite.question
        return fields

    def _done_payload(self, req: AnswerRequest, context: RetrievedContext | None, out: _Outcome,
                      started: float) -> dict[str, Any]:
        return {"used": out.used, "model": out.model, "C": round(context.confidence, 4) if context else None,
                "support": out.support, "answer": out.kind, "language": out.language,
                "request_id": req.request_id, "warnings": out.warnings,
                "latency_ms": int((time.perf_counter() - started) * 1000),
                **self._conversation_fields(req, out), **self._cache_fields(out),
                "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                          "estimated": out.usage_estimated, "cost_usd": round(out.cost_usd, 6)}}

    # -- routing ---------------------------------------------------------------------------------
    async def _route(self, req: AnswerRequest, confidence: float, messages: list[dict[str, str]],
                     out: _Outcome, started: float) -> AsyncIterator[AnswerEvent]:
        low = confidence < req.tau
        if low:
            out.warnings.append("low_confidence")
            yield AnswerEvent("warn", {"reason": "low_confidence", "C": round(confidence, 4), "tau": req.tau})
        fallback_tried = False
        denied: Denial | None = None
        if req.force_fallback or low:
            reservation = await self._reserve(req, messages)
            if isinstance(reservation, Denial):
                denied = reservation
                out.warnings.append(reservation.reason)
                yield AnswerEvent("warn", {"reason": reservation.reason, "message": reservation.message})
            else:
                fallback_tried = True
                async for event in self._fallback_or_warn(req, reservation, messages, out, started):
                    yield event
                if out.complete:
                    return
        if low and not self.policy.low_confidence_local:
            # Nothing paid may answer: say plainly that the documents do not seem to cover it.
            async for event in self._documents_answer(req, out, started, "not_found"):
                yield event
            return
        # The local model: free, so never blocked by the budget.
        try:
            async for event in self._stream_local(req, messages, out, started):
                yield event
        except ContextOverflow as exc:
            # The model's own count beat our estimate: a clear 4xx, never a silent paid answer.
            raise PromptTooLong(f"the local model refused the prompt as too long ({exc}); start a new conversation "
                                "or lower AION_PROMPT_PASSAGE_TOKENS") from exc
        except ChatUnavailable as exc:
            async for event in self._local_failed(req, messages, out, started, exc, fallback_tried):
                yield event
            return
        if out.tool_calls:  # a call to the caller's tool, not a claim the passages must back
            return
        out.support = measure_support("".join(out.parts), self._evidence(out), req.question).score
        if out.support >= self.policy.support_threshold:
            return
        out.warnings.append("unsupported_answer")
        notice = {"reason": "unsupported_answer", "support": out.support,
                  "threshold": self.policy.support_threshold, "restart": True}
        if not fallback_tried and denied is None:
            reservation = await self._reserve(req, messages)
            if isinstance(reservation, Reservation):
                yield AnswerEvent("warn", {**notice, "message": "the documents do not back the local answer; "
                                                                "the fallback model answers instead",
                                           "next": "fallback"})
                out.parts.clear()
                out.tool_calls.clear()
                async for event in self._fallback_or_warn(req, reservation, messages, out, started):
                    yield event
                if out.complete:
                    return
            else:
                denied = reservation
        yield AnswerEvent("warn", {**notice, "next": "quoted", "fallback": denied.reason if denied else None,
                                   "message": "the documents do not back the local answer; their own sentences "
                                              "are quoted instead"})
        async for event in self._documents_answer(req, out, started, "quoted"):
            yield event

    async def _fallback_or_warn(self, req: AnswerRequest, reservation: Reservation, messages: list[dict[str, str]],
                                out: _Outcome, started: float) -> AsyncIterator[AnswerEvent]:
        """Stream the fallback; when it fails, say so and leave `out` ready for whatever answers next."""
        streamed = False
        async for event in self._stream_fallback(req, reservation, messages, out, started):
            yield event
            streamed = streamed or event.type == "token"
        if out.complete:
            out.support = measure_support("".join(out.parts), self._evidence(out), req.question).score
            return
        out.warnings.append("fallback_failed")
        yield AnswerEvent("warn", {"reason": "fallback_failed", "message": out.error, "restart": streamed})
        out.parts.clear()
        out.tool_calls.clear()
        out.error = None

    async def _local_failed(self, req: AnswerRequest, messages: list[dict[str, str]], out: _Outcome,
                            started: float, exc: ChatUnavailable, fallback_tried: bool
                            ) -> AsyncIterator[AnswerEvent]:
        had_text = bool(out.parts)
        message = f"the local model failed: {exc}"
        logger.warning("%s", message)
        out.warnings.append("local_unavailable")
        reservation: Reservation | Denial | None = None
        if not fallback_tried:
            reservation = await self._reserve(req, messages)
        if isinstance(reservation, Reservation):
            yield AnswerEvent("warn", {"reason": "local_unavailable", "message": message, "restart": had_text})
            out.parts.clear()
            out.tool_calls.clear()
            async for event in self._stream_fallback(req, reservation, messages, out, started):
                yield event
            if out.complete:
                out.support = measure_support("".join(out.parts), self._evidence(out), req.question).score
                return
            raise ChatUnavailable(f"{message}; the fallback failed too: {out.error}")
        why = reservation.message if isinstance(reservation, Denial) else "the fallback already failed"
        yield AnswerEvent("warn", {"reason": "local_unavailable", "message": message})
        raise ChatUnavailable(f"{message}; no fallback: {why}")

    async def _documents_answer(self, req: AnswerRequest, out: _Outcome, started: float,
                                kind: AnswerKind) -> AsyncIterator[AnswerEvent]:
        """An answer made of the passages' own sentences: quoted, or "not covered" with the closest ones."""
        language = out.language or self.policy.default_language
        evidence = self._evidence(out)
        text = (quoted_answer(req.question, evidence, language) if kind == "quoted"
                else not_found_answer(req.question, evidence, language))
        out.parts.clear()
        out.tool_calls.clear()
        out.used, out.model, out.kind = "documents", None, kind
        out.prompt_tokens = out.completion_tokens = 0
        out.messages = []
        out.first_token_ms = out.first_token_ms or int((time.perf_counter() - started) * 1000)
        out.parts.append(text)
        yield AnswerEvent("token", {"text": text})
        out.complete = True

    @staticmethod
    def _evidence(out: _Outcome) -> list[Evidence]:
        return [Evidence(p.n, p.text, p.source) for p in out.passages]

    def _citation_check(self, req: AnswerRequest, out: _Outcome) -> CitationCheck | None:
        """Checks the answer's citation marks as it streams; none for structured output or without passages."""
        if not (self.policy.check_citations and out.passages) or req.output:
            return None
        return CitationCheck(self._evidence(out), req.question, self.policy.support_threshold)

    async def _reserve(self, req: AnswerRequest, messages: list[dict[str, str]]) -> Reservation | Denial:
        if self.fallback is None:
            return Denial("fallback_disabled", "no fallback is configured (set OPENAI_API_KEY or "
                                               "AION_FALLBACK_BASE_URL)")
        price = self._price(self.fallback.model)
        return await self.budget.reserve(
            tenant_id=req.tenant_id, request_id=req.request_id, model=self.fallback.model, price=price,
            prompt_tokens=estimate_messages_tokens(messages), max_completion_tokens=self.policy.fallback_max_tokens,
            caller=req.caller)

    def _price(self, model: str) -> Price:
        return price_for(model, self.policy.prices, self.policy.unknown_price)

    async def _stream_local(self, req: AnswerRequest, messages: list[dict[str, str]], out: _Outcome,
                            started: float) -> AsyncIterator[AnswerEvent]:
        out.used, out.model, out.messages, out.finish_reason = "local", self.local.model, messages, None
        citations = self._citation_check(req, out)
        async for delta in self.local.stream(messages, max_tokens=self.policy.local_max_tokens,
                                             temperature=self.policy.local_temperature,
                                             frequency_penalty=self.policy.local_frequency_penalty or None,
                                             request_id=req.correlation_id or req.request_id, output=req.output,
                                             model=req.model):
            out.model = delta.model or out.model  # the adapter version that really served it
            if delta.tool_calls:
                merge_tool_calls(out.tool_calls, delta.tool_calls)
                yield AnswerEvent("tool_call", {"tool_calls": delta.tool_calls})
            text = citations.feed(delta.text) if citations and delta.text else delta.text
            if text:
                out.parts.append(text)
                out.first_token_ms = out.first_token_ms or int((time.perf_counter() - started) * 1000)
                yield AnswerEvent("token", {"text": text})
            if delta.prompt_tokens is not None:
                out.prompt_tokens, out.completion_tokens = delta.prompt_tokens, delta.completion_tokens or 0
            out.finish_reason = delta.finish_reason or out.finish_reason
        if citations and (tail := citations.flush()):
            out.parts.append(tail)
            yield AnswerEvent("token", {"text": tail})
        out.citations_corrected += citations.corrected if citations else 0
        out.complete = True

    async def _stream_fallback(self, req: AnswerRequest, reservation: Reservation, messages: list[dict[str, str]],
                               out: _Outcome, started: float) -> AsyncIterator[AnswerEvent]:
        """Stream from the paid model; settle the reservation whatever happens."""
        assert self.fallback is not None
        out.used, out.model, out.messages, out.finish_reason = "fallback", reservation.model, messages, None
        citations = self._citation_check(req, out)
        parts: list[str] = []  # as the provider sent them: what an estimate of its usage counts
        usage: tuple[int, int] | None = None
        failed: str | None = None
        try:
            async for delta in self.fallback.stream(messages, max_tokens=self.policy.fallback_max_tokens,
                                                    temperature=self.policy.fallback_temperature,
                                                    request_id=req.correlation_id or req.request_id, output=req.output):
                if delta.tool_calls:
                    merge_tool_calls(out.tool_calls, delta.tool_calls)
                    yield AnswerEvent("tool_call", {"tool_calls": delta.tool_calls})
                if delta.text:
                    parts.append(delta.text)
                text = citations.feed(delta.text) if citations and delta.text else delta.text
                if text:
                    out.parts.append(text)
                    out.first_token_ms = out.first_token_ms or int((time.perf_counter() - started) * 1000)
                    yield AnswerEvent("token", {"text": text})
                if delta.prompt_tokens is not None:
                    usage = (delta.prompt_tokens, delta.completion_tokens or 0)
                out.finish_reason = delta.finish_reason or out.finish_reason
            if citations and (tail := citations.flush()):
                out.parts.append(tail)
                yield AnswerEvent("token", {"text": tail})
            out.citations_corrected += citations.corrected if citations else 0
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
            "first_token_ms": out.first_token_ms, "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens, "cost_usd": round(out.cost_usd, 6),
            "sources": [{"document": s["document"], "chunk": s["chunk"], "score": s["score"]} for s in out.sources],
            "history_turns": len(req.history), "tool_calls": out.tool_calls,
            # How far the passages back the answer (None: no answer, or "not found"); export reads it.
            "support": out.support, "answer": out.kind, "language": out.language,
            "rewritten": out.rewrite.question if out.rewrite else None,
            "rewrite_method": out.rewrite.method if out.rewrite else None,
            "history_dropped": out.history_dropped,
            "conversation_id": str(req.conversation.id) if req.conversation else None,
            # What the model was given (exactly; export trains on it, with its prompt_version) and who answered.
            **model_input(out.messages, self.policy.log_max_chars),
            "chunk_ids": [s["chunk"] for s in out.sources],
            "fallback": out.used == "fallback", "finish_reason": out.finish_reason,
            "citations_corrected": out.citations_corrected,
            "correlation_id": req.correlation_id, "model_choice": req.model,
            **self._cache_fields(out),
        }
        if self.on_answer:  # before the write: metrics count answers whose record the database refused too
            self.on_answer(meta)
        try:
            await self.log_event(req.tenant_id, "answer", 1.0 if out.complete else 0.0, meta, req.request_id)
        except Exception:
            logger.exception("could not log the answer event for request %s", req.request_id)

    async def _record_turns(self, req: AnswerRequest, context: RetrievedContext | None, out: _Outcome) -> None:
        """A complete exchange joins its conversation; a failed one is not kept as context."""
        if not (out.complete and req.conversation and self.conversations):
            return
        try:
            await self.conversations.record(
                req.conversation, req.question, "".join(out.parts).strip(), req.request_id,
                {"rewritten": out.rewrite.question if out.rewrite else None},
                {"used": out.used, "model": out.model, "C": round(context.confidence, 4) if context else None,
                 "support": out.support, "answer": out.kind, "warnings": out.warnings, "sources": out.sources})
        except Exception:
            logger.exception("could not store the exchange of request %s in conversation %s", req.request_id,
                             req.conversation.id)
