"""The transformers path (TransformersRunner): what GPU hosts and models other than the packaged GGUF run,
tested on the CPU — on the real SmolLM2 and on a tiny random Qwen2 with a sliding-window layer.

Batched rows get their solo logits within float tolerance (the model's matrix products round by batch
shape, so bits may differ) and the model's own full forward's; rows join and leave mid-stream. At the
engine: the KV budget bounds admission, and a request whose admission fails or that runs out of memory
fails alone while the batch goes on; queued work is answered at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
import torch

from services.inference.engine import FinishReason, GenerationRequest, SamplingParams
from services.inference.engine.core import Engine, EngineStopped
from services.inference.engine.hf_runner import TransformersRunner
from services.inference.engine.runner import choose_runner
from services.inference.loader import load_causal_lm, resolve_base_model
from tests.fixtures.models import save_tiny_qwen2
from tests.fixtures.servers import MODEL_CACHE

QUESTIONS = ["What is the capital of France?", "Name three colors, please.",
             "Write one sentence about a lighthouse keeper who collects old maps and storms."]


@pytest.fixture(scope="module")
def smollm():
    return load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="module")
def qwen(qwen_folder):
    return load_causal_lm(str(qwen_folder), "cpu", False)


@pytest.fixture(scope="module")
def qwen_eager(qwen_folder, qwen):
    """The same model with transformers' eager attention, which adds its mask to the scores."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(qwen_folder, attn_implementation="eager").eval()
    return type(qwen)(model=model, tokenizer=qwen.tokenizer, path=qwen.path, device="cpu", quantization="fp32")


def chat_ids(tokenizer, question: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]


def forced_tokens(tokenizer, row: int, steps: int) -> list[int]:
    ids = tokenizer("The answer, as far as anyone here can tell, is a long and winding story.")["input_ids"]
    return (ids[row:] + ids)[:steps]


@torch.inference_mode()
def reference_logits(model, ids: list[int]) -> torch.Tensor:
    """The model's own forward over the whole sequence, no cache: the last position's logits."""
    return model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("which", ["smollm", "qwen", "qwen_eager"])
def test_batched_rows_that_join_and_leave_get_their_solo_logits(which: str, request: pytest.FixtureRequest) -> None:
    loaded = request.getfixturevalue(which)
    runner = TransformersRunner(loaded.model, loaded.tokenizer, "cpu")
    prompts = [chat_ids(loaded.tokenizer, q) for q in QUESTIONS]
    steps = 12
    forced = [forced_tokens(loaded.tokenizer, row, steps) for row in range(3)]

    solo = []
    for prompt, tokens in zip(prompts, forced, strict=True):
        batch = runner.new_batch(4)
        logits, layers = runner.prefill(prompt, None)
        runner.admit(batch, layers, prompt, None)
        rows = [logits]
        for token in tokens:
            rows.append(runner.decode(batch, [token], [None])[0])
        solo.append(rows)

    # Row 0 starts alone, rows 1 and 2 join after 3 steps, row 0 leaves after 8; each row's step k is
    # compared with its solo step k.
    batch = runner.new_batch(4)
    live: list[int] = []  # batch row -> prompt index
    done = [0, 0, 0]

    def join(i: int) -> None:
        logits, layers = runner.prefill(prompts[i], None)
        assert torch.allclose(logits, solo[i][0], atol=1e-4, rtol=1e-4)
        runner.admit(batch, layers, prompts[i], None)
        live.append(i)

    join(0)
    for step in range(steps + 3):
        if step == 3:
            join(1)
            join(2)
        if step == 8:
            order = batch.remove_rows([live.index(0)])
            live[:] = [live[old] for old in order]
        if not live:
            break
        tokens = [forced[i][done[i]] for i in live]
        out = runner.decode(batch, tokens, [None] * len(live))
        for row, i in enumerate(live):
            done[i] += 1
            assert torch.allclose(out[row], solo[i][done[i]], atol=1e-4, rtol=1e-4), (which, i, done[i])
        finished = [row for row, i in enumerate(live) if done[i] == steps]
        if finished:
            order = batch.remove_rows(finished)
            live[:] = [live[old] for old in order]
    assert done == [8, steps, steps]
    # And the model's own forward over the whole sequence agrees (positions, masks, the sliding window).
    for i in (1, 2):
        expected = reference_logits(loaded.model, prompts[i] + forced[i][:steps])
        assert torch.allclose(solo[i][steps], expected, atol=1e-4, rtol=1e-4)


def test_decode_writes_in_place_without_copying_the_cache(qwen) -> None:
    """A decode step writes each row's new position into its slot: the cache's storage stays where it was
    (transformers' DynamicCache concatenates, copying every layer on every token)."""
    runner = TransformersRunner(qwen.model, qwen.tokenizer, "cpu")
    batch = runner.new_batch(4)
    for question in QUESTIONS[:2]:
        prompt = chat_ids(qwen.tokenizer, question)
        _, layers = runner.prefill(prompt, None)
        runner.admit(batch, layers, prompt, None)
    storage = [t.data_ptr() for t in batch.keys + batch.values]
    for _ in range(8):
        runner.decode(batch, [5, 6], [None, None])
    assert [t.data_ptr() for t in batch.keys + batch.values] == storage
    assert batch.lengths == [len(chat_ids(qwen.tokenizer, q)) + 8 for q in QUESTIONS[:2]]


def test_the_runner_is_chosen_once_by_model_and_device(smollm, qwen) -> None:
    assert choose_runner(smollm.model, smollm.tokenizer, "cpu").kind == "native"
    assert choose_runner(smollm.model, smollm.tokenizer, "cpu", choice="transformers").kind == "transformers"
    assert choose_runner(qwen.model, qwen.tokenizer, "cpu").kind == "transformers"
    with pytest.raises(ValueError, match="qwen2"):
        choose_runner(qwen.model, qwen.tokenizer, "cpu", choice="native")


# -- the engine on the transformers path ----------------------------------------------------------------
def request_for(loaded, question: str, max_new: int = 10, **params) -> GenerationRequest:
    return GenerationRequest(prompt_ids=chat_ids(loaded.tokenizer, question),
                             params=SamplingParams(max_new_tokens=max_new, **params))


def hold(engine: Engine) -> concurrent.futures.Future:
    """Keep the engine thread busy until the returned future is set: requests submitted meanwhile are all
    waiting when it looks at the queue, so admission order is the submission order."""
    gate: concurrent.futures.Future = concurrent.futures.Future()
    engine.run_op(lambda: gate.result(timeout=120))
    return gate


async def run_all(engine: Engine, requests: list[GenerationRequest]) -> list[list]:
    """Start the engine with every request queued, and collect each one's events."""
    gate = hold(engine)
    engine.start()
    handles = [engine.submit(r) for r in requests]
    gate.set_result(None)

    async def collect(handle) -> list:
        return [event async for event in engine.events(handle)]
    return await asyncio.wait_for(asyncio.gather(*[collect(h) for h in handles]), timeout=300)


async def test_the_kv_budget_bounds_how_many_rows_run_and_refuses_what_never_fits(qwen) -> None:
    runner = TransformersRunner(qwen.model, qwen.tokenizer, "cpu")
    requests = [request_for(qwen, q, max_new=10) for q in QUESTIONS + QUESTIONS[:1]]
    longest = max(len(r.prompt_ids) + 10 for r in requests)
    runner.kv_budget_bytes = 2 * longest * runner.kv_position_bytes()  # room for two rows, not three
    seen: list[int] = []
    engine = Engine(runner, max_batch_size=8, max_queue=8, on_step=lambda rows, *_: seen.append(rows))
    too_big = request_for(qwen, "hi", max_new=2 * longest)  # alone it would need more than the budget
    try:
        results = await run_all(engine, [*requests, too_big])
    finally:
        engine.stop()
    assert all(events[-1].finished is FinishReason.LENGTH for events in results[:-1])
    assert max(seen) == 2 and engine.stats().kv_cache_bytes <= runner.kv_budget_bytes
    refused = results[-1][-1]
    assert refused.finished is FinishReason.ERROR and refused.error_status == 400
    assert "AION_KV_CACHE_MB" in refused.error


class _OutOfMemoryAtThreeRows(TransformersRunner):
    """The real runner, with a device that has room for two rows only (as a CUDA OOM would show)."""

    def decode(self, batch, tokens, adapters):
        if batch.rows >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().decode(batch, tokens, adapters)


async def test_out_of_memory_in_decode_fails_the_newest_request_only(qwen) -> None:
    engine = Engine(_OutOfMemoryAtThreeRows(qwen.model, qwen.tokenizer, "cpu"), max_batch_size=8, max_queue=8)
    requests = [request_for(qwen, q, max_new=8) for q in QUESTIONS]
    try:
        # Admitted in order before the first decode step: the third one is the newest.
        results = await run_all(engine, requests)
    finally:
        engine.stop()
    finished = [events[-1] for events in results]
    assert [e.finished for e in finished[:2]] == [FinishReason.LENGTH, FinishReason.LENGTH]
    assert finished[2].finished is FinishReason.ERROR and finished[2].error_status == 503
    assert "out of memory" in finished[2].error


async def test_a_request_whose_admission_fails_fails_alone(qwen) -> None:
    engine = Engine(TransformersRunner(qwen.model, qwen.tokenizer, "cpu"), max_batch_size=4, max_queue=8)
    good = request_for(qwen, QUESTIONS[0], max_new=8, seed=7, temperature=1.0)
    bad = request_for(qwen, QUESTIONS[1], max_new=8, seed=2**64)  # a generator cannot take it
    try:
        results = await run_all(engine, [good, bad, request_for(qwen, QUESTIONS[2], max_new=8)])
    finally:
        engine.stop()
    assert results[0][-1].finished is FinishReason.LENGTH and results[2][-1].finished is FinishReason.LENGTH
    assert results[1][-1].finished is FinishReason.ERROR and "admission failed" in results[1][-1].error


async def test_requests_resolved_against_weights_that_changed_are_refused(qwen) -> None:
    engine = Engine(TransformersRunner(qwen.model, qwen.tokenizer, "cpu"), max_batch_size=4, max_queue=8)
    stale = request_for(qwen, QUESTIONS[0])
    engine.weights_version += 1  # what a merge does
    try:
        (events,) = await run_all(engine, [stale])
    finally:
        engine.stop()
    assert events[-1].finished is FinishReason.ERROR and events[-1].error_status == 409


async def test_a_cancelled_waiting_request_leaves_the_queue_at_once(qwen) -> None:
    engine = Engine(TransformersRunner(qwen.model, qwen.tokenizer, "cpu"), max_batch_size=1, max_queue=2)
    gate = hold(engine)  # nothing is admitted while it holds
    engine.start()
    try:
        waiting = engine.submit(GenerationRequest(prompt_ids=chat_ids(qwen.tokenizer, QUESTIONS[0]),
                                                  params=SamplingParams(max_new_tokens=4), adapter="aion-v1"))
        assert engine.stats().waiting == 1 and engine.adapters_in_use() == {"aion-v1": 1}
        engine.cancel(waiting.request.request_id)
        assert engine.stats().waiting == 0 and engine.adapters_in_use() == {}  # an unload is no longer blocked
        event = await asyncio.wait_for(waiting.events.get(), timeout=10)
        assert event.finished is FinishReason.CANCELLED
    finally:
        gate.set_result(None)
        engine.stop()


async def test_shutdown_answers_queued_model_operations_and_refuses_new_requests(qwen) -> None:
    engine = Engine(TransformersRunner(qwen.model, qwen.tokenizer, "cpu"), max_batch_size=1, max_queue=2)
    gate = hold(engine)
    engine.start()
    queued = engine.run_op(lambda: "never", barrier=True)
    engine.stop(timeout=0)  # the engine thread is inside the held op: stop does not wait for it
    try:
        with pytest.raises(EngineStopped):
            queued.result(timeout=10)
        with pytest.raises(EngineStopped):
            engine.submit(request_for(qwen, QUESTIONS[0]))
    finally:
        gate.set_result(None)
        engine.stop()
