"""The KV cache across inference mode, and a request whose admission fails (found by the schema sweep:
the second request after a decode that grew the cache got no answer at all)."""

from __future__ import annotations

import asyncio

import torch

from services.inference.engine import FinishReason, GenerationRequest, SamplingParams
from services.inference.engine.core import Engine
from services.inference.engine.kvcache import SlotCache

LAYERS, HEADS, DIM = 2, 2, 4


def prefilled(length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with torch.inference_mode():  # as the runner's prefill returns them
        return [(torch.randn(1, HEADS, length, DIM), torch.randn(1, HEADS, length, DIM)) for _ in range(LAYERS)]


def test_rows_join_and_leave_after_the_cache_grew_inside_inference_mode() -> None:
    cache = SlotCache(max_rows=8, max_length=4096)
    cache.append_row(prefilled(250), 250)
    with torch.inference_mode():  # the runner's decode grows the cache past its first 256 positions
        for _ in range(10):
            cache.reserve_step()
            cache.advance()
    assert cache.capacity > 256
    first = prefilled(3)
    cache.append_row(first, 3)  # outside inference mode, as the engine admits a request
    assert torch.equal(cache.keys[0][1, :3], first[0][0][0].transpose(0, 1))
    cache.append_row(prefilled(5), 5)
    assert cache.remove_rows([0]) == [2, 1]
    assert cache.lengths == [5, 3]


class _Runner:
    """Just enough of a runner for admission: prefill works, taking the row into the batch fails."""

    kind = "test"
    tokenizer = None
    eos_ids: frozenset[int] = frozenset()
    max_context = 64
    kv_budget_bytes = None

    def prefill(self, prompt_ids, adapter):
        return torch.zeros(8), prefilled(len(prompt_ids))

    def new_batch(self, max_rows: int) -> SlotCache:
        return SlotCache(max_rows, self.max_context)

    def admit(self, batch, layers, prompt_ids, adapter) -> None:
        raise RuntimeError("no room")


async def test_a_request_whose_admission_fails_gets_an_error_not_silence() -> None:
    engine = Engine(_Runner(), max_batch_size=4, max_queue=4)  # type: ignore[arg-type]
    engine.start()
    try:
        request = GenerationRequest(prompt_ids=[1, 2, 3], params=SamplingParams(max_new_tokens=4))
        events = await asyncio.wait_for(_collect(engine, request), timeout=10)
    finally:
        engine.stop()
    assert events[-1].finished is FinishReason.ERROR and "no room" in (events[-1].error or "")


async def _collect(engine: Engine, request: GenerationRequest) -> list:
    return [event async for event in engine.stream(request)]
