"""Chat over HTTP: JSON, SSE (GET as in the seed, POST with history) and an OpenAI-compatible route."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from shared.errors import AionError, BadRequest, ServiceUnavailable
from shared.logging import request_id_var
from shared.protocol.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceDelta,
    ChoiceMessage,
    ChunkChoice,
    ToolCall,
    ToolCallDelta,
    Usage,
    completion_id,
)

from ..auth.deps import principal_of
from ..clients.chat import merge_tool_calls
from ..deps import StateDep
from ..schemas import ChatLimits, ChatOptions, ChatRequest, ChatResponse, ModelOption
from ..services.answer import AnswerEvent, AnswerRequest, AnswerService
from ..services.conversations import ConversationRef

router = APIRouter()

GATEWAY_MODEL = "aion"
# Fields beyond OpenAI's that this route serves.
GATEWAY_FIELDS = frozenset({"conversation_id"})


async def get_answer_service(state: StateDep) -> AnswerService:
    return state.answers


AnswerDep = Annotated[AnswerService, Depends(get_answer_service)]


def _settings(request: Request) -> Any:
    return request.app.state.gateway.settings


def _tenant(request: Request) -> str:
    # One place decides the tenant: the caller's key (set by the guard), never the body.
    return principal_of(request).tenant_id


def _admin_only_options(request: Request, body: ChatRequest) -> tuple[ChatRequest, list[dict[str, Any]]]:
    """forceFallback and tau spend the budget or move the routing: honoured for admin keys only.

    For other keys they are ignored with a `warn` event rather than refused, so a client that always
    sends them (the seed's page did) keeps working.
    """
    principal = principal_of(request)
    asked = [name for name, used in (("forceFallback", body.forceFallback), ("tau", body.tau is not None)) if used]
    if principal.is_admin or not asked:
        return body, []
    notice = {"reason": "admin_only_option", "ignored": asked,
              "message": f"{' and '.join(asked)} can be set by admin keys only; the key '{principal.name}' has the "
                         f"'{principal.role}' role, so the server's own settings apply"}
    return body.model_copy(update={"forceFallback": False, "tau": None}), [notice]


async def _answer_request(request: Request, body: ChatRequest, *, store: bool | None = None) -> AnswerRequest:
    settings = _settings(request)
    state = request.app.state.gateway
    if len(body.message) > settings.max_query_chars:
        raise BadRequest(f"the question has {len(body.message)} characters; the limit is "
                         f"{settings.max_query_chars} (AION_MAX_QUERY_CHARS)")
    if body.conversation_id and body.history:
        raise BadRequest("send either conversation_id (the server keeps the history) or history, not both")
    body, notices = _admin_only_options(request, body)
    tenant = _tenant(request)
    # Checked before anything is stored: an unknown name is the caller's to fix (400), never a failed answer.
    chosen = await state.chat.models.check(tenant, body.model) if body.model is not None else None
    history: list[dict[str, str]] = [t.model_dump() for t in body.history]
    conversation: ConversationRef | None = None
    if body.conversation_id:
        conversation, history = await state.conversations.resume(principal_of(request), body.conversation_id)
        if body.model is not None and chosen != conversation.model:
            await state.conversations.update(principal_of(request), conversation.id, model=chosen, set_model=True)
            conversation = replace(conversation, model=chosen)
        chosen = conversation.model
    elif (body.store if store is None else store) and not history:
        conversation = await state.conversations.start(principal_of(request), body.message, chosen)
    tau = settings.tau_confidence if body.tau is None else body.tau
    # The answer's id is always the server's own: feedback addresses it, so a caller-chosen
    # X-Request-ID (kept as a correlation id) can never name, or collide with, someone else's answer.
    return AnswerRequest(question=body.message.strip(), tenant_id=tenant,
                         request_id=uuid.uuid4().hex, correlation_id=request_id_var.get(), tau=tau,
                         force_fallback=body.forceFallback, history=history, conversation=conversation,
                         notices=notices, caller=principal_of(request).caller,
                         model=await state.chat.models.resolve(chosen))


def _sse(events: AsyncIterator[AnswerEvent]) -> EventSourceResponse:
    async def frames() -> AsyncIterator[dict]:
        async for event in events:
            yield {"event": event.type, "data": json.dumps(event.data, ensure_ascii=False)}

    return EventSourceResponse(frames(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _collect(events: AsyncIterator[AnswerEvent]) -> dict[str, Any]:
    parts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    sources: list[dict] = []
    confidence = 0.0
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    async for event in events:
        if event.type == "sources":
            sources, confidence = event.data["sources"], event.data["C"]
        elif event.type == "token":
            parts.append(event.data["text"])
        elif event.type == "tool_call":
            merge_tool_calls(tool_calls, event.data["tool_calls"])
        elif event.type == "warn" and event.data.get("restart"):
            parts.clear()  # the answer starts over on another model
            tool_calls.clear()
        elif event.type == "error":
            error = event.data
        elif event.type == "done":
            done = event.data
    if done is None:
        if error and 400 <= (error.get("status") or 500) < 500:  # the request itself cannot be answered
            raise AionError(error["message"], status_code=error["status"], code=error.get("code"))
        # Every other way here is transient (models or the database down): tell clients when to retry.
        raise ServiceUnavailable(error["message"] if error else "no model could answer; retry shortly",
                                 headers={"Retry-After": "2"})
    return {"text": "".join(parts).strip(), "tool_calls": tool_calls, "sources": sources, "C": confidence, **done}


@router.get("/api/ai/chat/options", response_model=ChatOptions)
async def chat_options(request: Request, state: StateDep) -> ChatOptions:
    """What a chat client shows before asking: the question's length limit and the models it may choose."""
    models = await state.chat.models.options(_tenant(request))
    return ChatOptions(limits=ChatLimits(max_question_chars=_settings(request).max_query_chars),
                       models=[ModelOption.model_validate(m) for m in models])


@router.post("/api/ai/chat", response_model=ChatResponse)
async def chat(body: ChatRequest, request: Request, answers: AnswerDep) -> dict[str, Any]:
    """The seed's route: {message, forceFallback, tau} → {text, used, C, sources, request_id, usage}."""
    return await _collect(answers.run(await _answer_request(request, body)))


@router.get("/api/ai/chat/stream")
async def chat_stream_get(request: Request, answers: AnswerDep,
                          q: Annotated[str, Query(description="the question")] = "",
                          tau: Annotated[float | None, Query()] = None,
                          forceFallback: Annotated[bool, Query()] = False,  # noqa: N803
                          conversation_id: Annotated[uuid.UUID | None, Query()] = None,
                          store: Annotated[bool, Query()] = True,
                          model: Annotated[str | None, Query(description="see GET /api/ai/chat/options")] = None,
                          ) -> EventSourceResponse:
    """SSE: `sources`, `warn`…, `token`…, then `done` (or `error`)."""
    try:
        body = ChatRequest(message=q, tau=tau, forceFallback=forceFallback, conversation_id=conversation_id,
                           store=store, model=model)
    except ValidationError as exc:
        raise BadRequest("; ".join(f"{'.'.join(map(str, e['loc'])) or 'q'}: {e['msg']}" for e in exc.errors())
                         .replace("message:", "q:")) from exc
    return _sse(answers.run(await _answer_request(request, body)))


@router.post("/api/ai/chat/stream")
async def chat_stream_post(body: ChatRequest, request: Request, answers: AnswerDep) -> EventSourceResponse:
    """The same stream from a JSON body: continue a stored conversation by id (what the chat page does),
    or send the turns so far as `history`."""
    return _sse(answers.run(await _answer_request(request, body)))


def _extra_conversation_id(body: ChatCompletionRequest) -> uuid.UUID | None:
    value = (body.model_extra or {}).get("conversation_id")
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise BadRequest(f"conversation_id '{value}' is not a conversation id (a UUID)") from exc


def _turn_error(error: Any) -> str:
    """A validation error in the caller's terms: the history is the messages before the question."""
    loc = error["loc"]
    if loc and loc[0] == "history" and len(loc) > 1:
        return f"earlier message {loc[1] + 1} (counting user and assistant messages): {error['msg']}"
    return f"the last user message: {error['msg']}"


def _output_fields(body: ChatCompletionRequest) -> dict[str, Any]:
    """The caller's tools, tool_choice and response_format, for whichever model answers (as sent)."""
    return body.model_dump(include={"tools", "tool_choice", "response_format"}, exclude_none=True, by_alias=True)


@router.post("/v1/chat/completions", response_model=None)
async def openai_chat(body: ChatCompletionRequest, request: Request, answers: AnswerDep):
    """Grounded answers for any OpenAI client: model `aion`; sources ride in an extra `sources` field."""
    if body.model != GATEWAY_MODEL:
        raise BadRequest(f"model '{body.model}' is not served here; use '{GATEWAY_MODEL}'")
    refusal = body.refusal(accepted=GATEWAY_FIELDS)
    if refusal:
        raise BadRequest(refusal[1], param=refusal[0])
    turns = [{"role": m.role, "content": m.text()} for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise BadRequest("the last message must be a user message with the question")
    try:
        chat_body = ChatRequest(message=turns[-1]["content"], history=turns[:-1][-20:],
                                conversation_id=_extra_conversation_id(body))
    except ValidationError as exc:  # a turn over the size limit is the caller's to fix, not a server error
        raise BadRequest("; ".join(_turn_error(e) for e in exc.errors())) from exc
    # The client keeps the conversation; only an explicit conversation_id is continued and stored.
    answer_request = replace(await _answer_request(request, chat_body, store=False), output=_output_fields(body))
    if not body.stream:
        out = await _collect(answers.run(answer_request))
        usage = out["usage"]
        calls = [ToolCall.model_validate(c) for c in out["tool_calls"]]
        message = ChoiceMessage(content=out["text"] or (None if calls else ""), tool_calls=calls or None)
        return ChatCompletionResponse(
            model=GATEWAY_MODEL, choices=[Choice(message=message, finish_reason="tool_calls" if calls else "stop")],
            usage=Usage(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
                        total_tokens=usage["prompt_tokens"] + usage["completion_tokens"]),
            sources=out["sources"], aion={"used": out["used"], "answer": out["answer"], "C": out["C"],
                                          "support": out["support"], "request_id": out["request_id"],
                                          "warnings": out["warnings"], "conversation_id": out.get("conversation_id")})

    cid, created = completion_id(), int(time.time())

    async def chunks() -> AsyncIterator[dict]:
        called = False
        async for event in answers.run(answer_request):
            if event.type == "sources":
                first = ChatCompletionChunk(id=cid, created=created, model=GATEWAY_MODEL,
                                            choices=[ChunkChoice(delta=ChoiceDelta(role="assistant", content=""))],
                                            sources=event.data["sources"], aion={"C": event.data["C"]})
                yield {"data": first.model_dump_json(exclude_none=True)}
            elif event.type == "token":
                c = ChatCompletionChunk(id=cid, created=created, model=GATEWAY_MODEL,
                                        choices=[ChunkChoice(delta=ChoiceDelta(content=event.data["text"]))])
                yield {"data": c.model_dump_json(exclude_none=True)}
            elif event.type == "tool_call":
                called = True
                deltas = [ToolCallDelta.model_validate(d) for d in event.data["tool_calls"]]
                c = ChatCompletionChunk(id=cid, created=created, model=GATEWAY_MODEL,
                                        choices=[ChunkChoice(delta=ChoiceDelta(tool_calls=deltas))])
                yield {"data": c.model_dump_json(exclude_none=True)}
            elif event.type == "warn":
                c = ChatCompletionChunk(id=cid, created=created, model=GATEWAY_MODEL, choices=[], aion={"warn": event.data})
                yield {"data": c.model_dump_json(exclude_none=True)}
            elif event.type == "error":
                yield {"data": json.dumps({"error": {"message": event.data["message"], "type": "server_error",
                                                     "code": "answer_failed"}})}
            elif event.type == "done":
                usage = event.data["usage"]
                c = ChatCompletionChunk(id=cid, created=created, model=GATEWAY_MODEL,
                                        choices=[ChunkChoice(delta=ChoiceDelta(),
                                                             finish_reason="tool_calls" if called else "stop")],
                                        usage=Usage(prompt_tokens=usage["prompt_tokens"],
                                                    completion_tokens=usage["completion_tokens"],
                                                    total_tokens=usage["prompt_tokens"] + usage["completion_tokens"]),
                                        aion={"used": event.data["used"], "answer": event.data["answer"],
                                              "support": event.data["support"],
                                              "request_id": event.data["request_id"]})
                yield {"data": c.model_dump_json(exclude_none=True)}
        yield {"data": "[DONE]"}

    return EventSourceResponse(chunks(), ping=15)
