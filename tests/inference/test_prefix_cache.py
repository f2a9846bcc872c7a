"""The prompt prefix cache: which blocks it keeps and finds, and, on the real default model, that a prompt
whose prefix comes from the cache gets the same bits as one computed afresh (so batched = solo and
greedy answers never depend on what was asked before)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from services.inference.engine import Engine, GenerationRequest, SamplingParams
from services.inference.engine.kernel_library import kernel
from services.inference.engine.native_runner import NativeRunner
from services.inference.engine.prefix_cache import BLOCK, PrefixCache, reusable_blocks
from services.inference.loader import load_causal_lm, resolve_base_model
from tests.fixtures.servers import MODEL_CACHE

LAYERS, KV_HEADS, DIM = 3, 2, 4


def fake_layers(length: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, KV_HEADS, length, DIM, generator=g), torch.randn(1, KV_HEADS, length, DIM, generator=g))
            for _ in range(LAYERS)]


def block_bytes() -> int:
    return LAYERS * 2 * KV_HEADS * BLOCK * DIM * 4


def test_finds_the_longest_cached_run_of_leading_blocks_and_never_the_last_token() -> None:
    cache = PrefixCache(64 * block_bytes())
    prompt = list(range(3 * BLOCK + 10))
    layers = fake_layers(len(prompt), seed=1)
    assert cache.lookup(None, prompt) == (0, None)
    cache.store(None, prompt, layers)
    assert cache.stats().blocks == 3  # full blocks only: the last 10 tokens are not kept

    found, past = cache.lookup(None, prompt)
    assert found == 3 * BLOCK and past is not None
    for (k, v), (ref_k, ref_v) in zip(past, layers, strict=True):
        assert torch.equal(k, ref_k[:, :, :found]) and torch.equal(v, ref_v[:, :, :found])

    # a prompt of exactly 2 blocks reuses only the first: its last token must be computed
    assert reusable_blocks(2 * BLOCK) == 1
    assert cache.lookup(None, prompt[:2 * BLOCK])[0] == BLOCK
    # the same tokens after a different first block, or for another adapter, are not found
    changed = [7] + prompt[1:]
    assert cache.lookup(None, changed)[0] == 0
    assert cache.lookup("support-v2", prompt)[0] == 0
    # a prompt that diverges inside block 2 reuses blocks 0 and 1
    diverging = prompt[:2 * BLOCK + 5] + [999] * 100
    assert cache.lookup(None, diverging)[0] == 2 * BLOCK
    stats = cache.stats()
    assert stats.hit_tokens == 3 * BLOCK + BLOCK + 2 * BLOCK


def test_eviction_keeps_within_capacity_and_takes_chains_from_their_ends() -> None:
    cache = PrefixCache(4 * block_bytes())
    first = list(range(3 * BLOCK + 1))
    cache.store(None, first, fake_layers(len(first), seed=1))
    second = [5000 + t for t in range(3 * BLOCK + 1)]
    cache.store(None, second, fake_layers(len(second), seed=2))
    stats = cache.stats()
    assert stats.blocks == 4 and stats.bytes <= stats.capacity_bytes
    # the first prompt lost its last two blocks, not its first: it still finds block 0
    assert cache.lookup(None, first)[0] == BLOCK
    assert cache.lookup(None, second)[0] == 3 * BLOCK


def test_a_cache_of_zero_bytes_keeps_nothing() -> None:
    cache = PrefixCache(0)
    prompt = list(range(2 * BLOCK + 1))
    cache.store(None, prompt, fake_layers(len(prompt), seed=1))
    assert not cache.enabled and cache.stats().blocks == 0 and cache.lookup(None, prompt) == (0, None)


# -- the real default model -------------------------------------------------------------------------
needs_kernels = pytest.mark.skipif(kernel() is None, reason="the native kernels need a C compiler and AVX-512")

SYSTEM = ("Você é o assistente do escritório. Responda somente a partir do contexto. O escritório fica na "
          "Rua das Flores, 120, em três andares: o térreo tem a recepção, a cantina e duas salas de reunião; "
          "o primeiro andar é da engenharia; o segundo, do produto e do design. O horário é das 7h às 20h. ")
QUESTIONS = ["Onde fica a cantina?", "Qual é o horário do escritório?", "Quem ocupa o primeiro andar?"]


@pytest.fixture(scope="module")
def loaded():
    return load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)


@pytest.fixture(scope="module")
def prompts(loaded) -> list[list[int]]:
    out = [loaded.tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM * 2},
                                                 {"role": "user", "content": q}],
                                                add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
           for q in QUESTIONS]
    assert all(len(p) > 2 * BLOCK for p in out)
    return out


@needs_kernels
def test_a_prompt_from_cached_blocks_gets_the_bits_of_a_fresh_one(loaded, prompts) -> None:
    cached = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    cold = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    cached.prefill(prompts[0], None)
    for prompt in prompts[1:]:
        before = cached.prefix_cache.stats().hit_tokens
        logits, layers = cached.prefill(prompt, None)
        assert cached.prefix_cache.stats().hit_tokens - before >= 2 * BLOCK  # the shared system prompt
        cold.prefix_cache.clear()
        ref_logits, ref_layers = cold.prefill(prompt, None)
        assert torch.equal(logits, ref_logits)
        for (k, v), (ref_k, ref_v) in zip(layers, ref_layers, strict=True):
            assert torch.equal(k, ref_k) and torch.equal(v, ref_v)


@needs_kernels
def test_changing_the_weights_empties_the_cache(loaded, prompts) -> None:
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    runner.prefill(prompts[0], None)
    assert runner.prefix_cache.stats().blocks > 0
    runner.model = runner.model  # what a merge does after editing weights in place
    assert runner.prefix_cache.stats().blocks == 0


@needs_kernels
async def test_greedy_answers_are_the_same_with_a_warm_cache_alone_or_batched(loaded, prompts) -> None:
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    engine = Engine(runner, max_batch_size=8, max_queue=16)
    engine.start()
    try:
        async def answer(prompt: list[int]) -> list[str]:
            request = GenerationRequest(prompt_ids=list(prompt), params=SamplingParams(max_new_tokens=24,
                                                                                        temperature=0.0))
            return [event.text async for event in engine.stream(request) if event.text]

        cold = []
        for prompt in prompts:  # each alone, the cache emptied first: nothing reused
            runner.prefix_cache.clear()
            cold.append(await answer(prompt))
        hits = runner.prefix_cache.stats().hit_tokens
        warm = await asyncio.gather(*(answer(p) for p in prompts))  # together, prefixes from the cache
        assert runner.prefix_cache.stats().hit_tokens > hits
        assert ["".join(t) for t in warm] == ["".join(t) for t in cold]
        assert all(cold)
    finally:
        engine.stop()


def test_rows_that_begin_alike_share_their_common_blocks_with_the_first_such_row() -> None:
    from services.inference.engine.kvcache import SlotCache

    cache = SlotCache(8, 1024)
    layers = fake_layers(3 * BLOCK + 3, seed=1)
    a, b, c = (b"a0", b"a1", b"a2"), (b"a0", b"a1", b"x2"), (b"z0",)
    for blocks in (a, b, (), c, a):
        cache.append_row(layers, 3 * BLOCK + 3, blocks)
    tasks, leader, shared = cache.sharing(kv_heads=2)
    assert leader.tolist() == [0, 0, 2, 3, 0]
    assert shared.tolist() == [0, 2 * BLOCK, 0, 0, 3 * BLOCK]
    # a group's rows run together, head by head: rows 0, 1, 4 for head 0, then for head 1
    assert tasks.tolist()[:6] == [0 * 2, 1 * 2, 4 * 2, 0 * 2 + 1, 1 * 2 + 1, 4 * 2 + 1]
    assert sorted(tasks.tolist()) == list(range(10))
    cache.remove_rows([0])  # the leader leaves: the last row takes its slot, the group finds a new leader
    _, leader, shared = cache.sharing(kv_heads=2)
    assert cache.blocks == [a, b, (), c] and leader.tolist() == [0, 0, 2, 3]
    assert shared.tolist() == [0, 2 * BLOCK, 0, 0]
    cache.remove_rows([0, 1])
    assert cache.sharing(kv_heads=2) is None  # nothing in common left


@needs_kernels
def test_decode_reading_shared_blocks_from_one_slot_gives_every_row_its_own_bits(loaded, prompts) -> None:
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    rows = [prompts[0], prompts[1], prompts[0][:-3], prompts[2]]
    shared_batch, plain_batch = runner.new_batch(8), runner.new_batch(8)
    tokens = []
    for prompt in rows:
        logits, layers = runner.prefill(prompt, None)
        shared_batch.append_row(layers, len(prompt), runner.shared_blocks(prompt, None))
        plain_batch.append_row(layers, len(prompt))
        tokens.append(int(logits.argmax()))
    assert shared_batch.sharing(runner.decoder().kv_heads) is not None
    for step in range(6):
        if step == 3:  # the group's leader finishes: the others must still read the right slot
            for batch in (shared_batch, plain_batch):
                batch.remove_rows([0])
            tokens = tokens[-1:] + tokens[1:-1]
        with_sharing = runner.decode(shared_batch, tokens, [None] * len(tokens))
        without = runner.decode(plain_batch, tokens, [None] * len(tokens))
        assert torch.equal(with_sharing, without), step
        tokens = [int(t) for t in with_sharing.argmax(dim=-1)]


@needs_kernels
def test_adapter_prompts_reuse_their_own_blocks_exactly(prompts) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import DynamicCache

    base = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)
    torch.manual_seed(11)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    wrapped = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                    init_lora_weights=False), adapter_name="tuned").eval()
    cached = NativeRunner(wrapped, base.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    cold = NativeRunner(wrapped, base.tokenizer, "cpu", prefix_cache_bytes=64 << 20)
    for runner in (cached, cold):
        runner.peft_wrapped = True

    cached.prefill(prompts[0], None)  # the base model's blocks are not the adapter's
    before = cached.prefix_cache.stats().hit_tokens
    cached.prefill(prompts[0], "tuned")
    assert cached.prefix_cache.stats().hit_tokens == before
    for prompt in prompts[1:]:
        logits, layers = cached.prefill(prompt, "tuned")
        cold.prefix_cache.clear()
        ref_logits, ref_layers = cold.prefill(prompt, "tuned")
        assert torch.equal(logits, ref_logits)
        assert all(torch.equal(k, rk) and torch.equal(v, rv) for (k, v), (rk, rv) in zip(layers, ref_layers, strict=True))
    assert cached.prefix_cache.stats().hit_tokens - before >= 2 * 2 * BLOCK
    # and it is the adapter's model: PEFT's own forward with the adapter active agrees
    wrapped.set_adapter("tuned")
    with torch.inference_mode():
        out = wrapped(input_ids=torch.tensor([prompts[2]]), past_key_values=DynamicCache(config=wrapped.config),
                      use_cache=True)
    assert torch.allclose(logits, out.logits[0, -1], atol=2e-4, rtol=0)
    assert cached.shared_blocks(prompts[2], "tuned") != cached.shared_blocks(prompts[2], None)
