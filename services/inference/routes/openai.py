"""OpenAI-compatible routes: the official `openai` client works against these unchanged."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse

from shared.errors import BadRequest, ServiceUnavailable, error_body
from shared.protocol.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceDelta,
    ChoiceMessage,
    ChunkChoice,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCallDelta,
    ModelCard,
    ModelList,
    ToolCallDelta,
    Usage,
    completion_id,
)

from ..cancellation import unless_disconnected
from ..deps import ReadyDep, require_token
from ..engine import FinishReason
from ..tools import ToolCallReader

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

def _finish(reason: FinishReason | str, called: bool) -> str:
    if reason == FinishReason.LENGTH:
        return "length"
    return "tool_calls" if called else "stop"


def _delta(reader: ToolCallReader | None, kind: str, text: str) -> ChoiceDelta:
    """One reader event as OpenAI's delta: content, or a tool call's id and name, or its arguments."""
    if kind == "content":
        return ChoiceDelta(content=text)
    assert reader is not None
    if kind == "call":
        return ChoiceDelta(tool_calls=[ToolCallDelta(index=0, id=reader.call_id, type="function",
                                                     function=FunctionCallDelta(name=text, arguments=""))])
    return ChoiceDelta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(arguments=text))])


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, state: ReadyDep, http: Request):
    gen = state.generation
    assert gen is not None
    job = gen.build_chat(body)
    request, reader = job.request, job.reader
    # Report what really served the request (the adapter's versioned name), as OpenAI reports snapshots.
    served = state.served_model_name(request.adapter)
    if not body.stream:
        done = await unless_disconnected(http, gen.complete(request))
        content, calls = reader.read(done.text) if reader else (done.text, [])
        return ChatCompletionResponse(
            model=served, choices=[Choice(message=ChoiceMessage(content=content, tool_calls=calls or None),
                                          finish_reason=_finish(done.finish_reason, bool(calls)))],
            usage=Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                        total_tokens=done.prompt_tokens + done.completion_tokens))

    cid = completion_id()
    handle = gen.submit(request)  # a full queue too: a 503 with Retry-After, not a 200 that breaks off
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: ChoiceDelta, finish: str | None = None) -> dict:
        c = ChatCompletionChunk(id=cid, model=served, choices=[ChunkChoice(delta=delta, finish_reason=finish)])
        return {"data": c.model_dump_json(exclude_none=True)}

    async def events() -> AsyncIterator[dict]:
        yield chunk(ChoiceDelta(role="assistant", content=""))
        async for event in gen.events(handle):
            if event.text:
                pieces = reader.feed(event.text) if reader else [("content", event.text)]
                for kind, text in pieces:
                    yield chunk(_delta(reader, kind, text))
            if event.finished is FinishReason.ERROR:
                yield {"data": json.dumps(error_body(event.error or "generation failed", "generation_failed",
                                                     "server_error"))}
            elif event.finished is not None:
                for kind, text in reader.finish() if reader else []:
                    yield chunk(_delta(reader, kind, text))
                called = reader is not None and reader.mode == "call"
                yield chunk(ChoiceDelta(), _finish(event.finished, called))
                if include_usage:
                    usage = Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                                  total_tokens=event.prompt_tokens + event.completion_tokens)
                    tail = ChatCompletionChunk(id=cid, model=served, choices=[], usage=usage)
                    yield {"data": tail.model_dump_json()}
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), ping=15)


@router.get("/models", response_model=ModelList)
async def list_models(state: ReadyDep) -> ModelList:
    assert state.adapters is not None and state.generation is not None
    window = state.generation.max_context
    cards = [ModelCard(id=name, parent=None if i == 0 else state.base_name, max_model_len=window)
             for i, name in enumerate(state.adapters.model_names())]
    if state.embedder:
        cards.append(ModelCard(id=state.embedder.name))
    return ModelList(data=cards)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, state: ReadyDep) -> EmbeddingResponse:
    embedder = state.embedder
    if embedder is None:
        raise ServiceUnavailable("this inference service serves no embeddings (AION_EMBED_MODEL=none); ask the "
                                 "service named by AION_EMBEDDINGS_URL", code="embeddings_off")
    texts = body.texts()
    if not texts:
        raise BadRequest("input must hold at least one text")
    if len(texts) > state.settings.max_embed_inputs:
        raise BadRequest(f"at most {state.settings.max_embed_inputs} inputs per request; got {len(texts)}")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise BadRequest("every input must be a non-empty string")
    if body.model not in (None, "", embedder.name):
        raise BadRequest(f"embedding model '{body.model}' is not served; use '{embedder.name}'")
    if body.dimensions not in (None, embedder.dimensions):
        raise BadRequest(f"'{embedder.name}' gives {embedder.dimensions} dimensions; got dimensions={body.dimensions}")
    vectors = await anyio.to_thread.run_sync(embedder.embed, texts)
    tokens = await anyio.to_thread.run_sync(embedder.count_tokens, texts)
    encoded: list[list[float] | str] = list(vectors)
    if body.encoding_format == "base64":
        encoded = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") for v in vectors]
    return EmbeddingResponse(data=[EmbeddingData(index=i, embedding=v) for i, v in enumerate(encoded)],
                             model=embedder.name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
