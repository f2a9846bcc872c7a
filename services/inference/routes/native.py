"""The seed's dialect: POST /generate and POST /generate/stream (SSE: token … done | error)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse

from ..cancellation import unless_disconnected
from ..deps import ReadyDep, require_token
from ..engine import FinishReason
from ..protocol import GenerateRequest, GenerateResponse, Usage

router = APIRouter(dependencies=[Depends(require_token)])


def _build(state: ReadyDep, body: GenerateRequest):
    gen = state.generation
    assert gen is not None
    messages = gen.native_messages(body.prompt, body.system, body.context)
    return gen, gen.build(messages, model=body.adapter, max_new_tokens=body.max_new_tokens,
                          temperature=body.temperature, top_p=body.top_p, stop=body.stop, seed=body.seed,
                          frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
                          ignore_eos=body.ignore_eos)


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, state: ReadyDep, http: Request) -> GenerateResponse:
    gen, request = _build(state, body)
    done = await unless_disconnected(http, gen.complete(request))
    return GenerateResponse(ms=done.ms, text=done.text.strip(), finish_reason=done.finish_reason,
                            adapter=done.adapter,
                            usage=Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                                        total_tokens=done.prompt_tokens + done.completion_tokens))


@router.post("/generate/stream")
async def generate_stream(body: GenerateRequest, state: ReadyDep) -> EventSourceResponse:
    gen, request = _build(state, body)  # validation errors surface as 4xx before the stream opens
    started = time.perf_counter()
    handle = gen.submit(request)  # a full queue too: a 503 with Retry-After, not a 200 that breaks off

    async def events() -> AsyncIterator[dict]:
        async for event in gen.events(handle):
            if event.text:
                yield {"event": "token", "data": json.dumps({"text": event.text}, ensure_ascii=False)}
            if event.finished is FinishReason.ERROR:
                yield {"event": "error", "data": json.dumps({"message": event.error}, ensure_ascii=False)}
            elif event.finished is not None:
                usage = {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                         "total_tokens": event.prompt_tokens + event.completion_tokens}
                yield {"event": "done", "data": json.dumps({
                    "finish_reason": event.finished.value, "usage": usage, "adapter": request.adapter,
                    "ms": int((time.perf_counter() - started) * 1000)})}

    return EventSourceResponse(events(), ping=15)
