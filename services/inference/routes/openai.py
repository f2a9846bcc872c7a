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
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)

from ..cancellation import unless_disconnected
from ..deps import ReadyDep, require_token
from ..engine import FinishReason

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

_ROLE_MAP = {"developer": "system", "tool": "user"}


def _messages(body: ChatCompletionRequest, default_system: str) -> list[dict[str, str]]:
    messages = [{"role": _ROLE_MAP.get(m.role, m.role), "content": m.text()} for m in body.messages]
    if not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": default_system})
    return messages


def _finish(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, state: ReadyDep, http: Request):
    gen = state.generation
    assert gen is not None
    request = gen.build(_messages(body, state.settings.system_prompt), model=body.model,
                        max_new_tokens=body.requested_max_tokens(), temperature=body.temperature,
                        top_p=body.top_p, stop=body.stop, seed=body.seed,  # type: ignore[arg-type]
                        frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty)
    # Report what really served the request (the adapter's versioned name), as OpenAI reports snapshots.
    served = state.served_model_name(request.adapter)
    if not body.stream:
        done = await unless_disconnected(http, gen.complete(request))
        return ChatCompletionResponse(
            model=served, choices=[Choice(message=ChoiceMessage(content=done.text),
                                              finish_reason="length" if done.finish_reason == "length" else "stop")],
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
                yield chunk(ChoiceDelta(content=event.text))
            if event.finished is FinishReason.ERROR:
                yield {"data": json.dumps(error_body(event.error or "generation failed", "generation_failed",
                                                     "server_error"))}
            elif event.finished is not None:
                yield chunk(ChoiceDelta(), _finish(event.finished))
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
