"""The engine's own forward passes against the model's: the native prompt pass and the decode step on the
real default model give the logits and keys/values of transformers' forward (to float32 rounding)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from services.inference.engine.kernel_library import kernel
from services.inference.engine.native_runner import NativeRunner
from services.inference.loader import load_causal_lm, resolve_base_model
from tests.fixtures.servers import MODEL_CACHE

pytestmark = pytest.mark.skipif(kernel() is None, reason="the native kernels need a C compiler and AVX-512")

MESSAGES = [{"role": "system", "content": "Você é um assistente. Responda a partir do contexto."},
            {"role": "user", "content": "O farol de Gull Island pisca a cada sete segundos. Com que frequência ele pisca?"}]
TOLERANCE = 2e-4  # logits are O(10); the two paths add the same products in different orders


@pytest.fixture(scope="module")
def loaded():
    return load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)


@pytest.fixture(scope="module")
def prompt_ids(loaded) -> list[int]:
    return loaded.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]


@torch.inference_mode()
def reference(model, ids: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    return out.logits[0], cache


@pytest.mark.parametrize("prefix_cache", [False, True], ids=["mkl-prompt", "packed-prompt"])
def test_native_prompt_pass_matches_the_models_forward(loaded, prompt_ids, prefix_cache: bool) -> None:
    """Without a prefix cache the prompt runs through MKL's GEMMs; with one, through the packed kernels
    (whose rows do not depend on each other, so cached prefixes give the same bits)."""
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu", prefix_cache_bytes=(16 << 20) * prefix_cache)
    decoder = runner.decoder()
    assert decoder.prefill_layers is not None and decoder.exact_prefill  # the default model: both paths
    logits, layers = runner.prefill(prompt_ids, None)
    ref_logits, ref_cache = reference(loaded.model, prompt_ids)
    assert torch.allclose(logits, ref_logits[-1], atol=TOLERANCE, rtol=0)
    assert int(logits.argmax()) == int(ref_logits[-1].argmax())
    assert len(layers) == len(ref_cache.layers)
    for (keys, values), ref in zip(layers, ref_cache.layers, strict=True):
        assert keys.shape == ref.keys.shape and values.shape == ref.values.shape
        assert torch.allclose(keys, ref.keys, atol=TOLERANCE, rtol=0)
        assert torch.allclose(values, ref.values, atol=TOLERANCE, rtol=0)


def test_decode_steps_match_the_models_forward_for_every_row(loaded, prompt_ids) -> None:
    """Two rows of different lengths decode together; each step's logits are the full forward's at
    that position (teacher-forced with the model's own greedy tokens)."""
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu")
    short = prompt_ids[:-7]
    ref_long, ref_short = reference(loaded.model, prompt_ids)[0], reference(loaded.model, short)[0]
    batch = runner.new_batch(4)
    tokens = []
    for ids, ref in ((prompt_ids, ref_long), (short, ref_short)):
        logits, layers = runner.prefill(ids, None)
        batch.append_row(layers, len(ids))
        tokens.append(int(ref[-1].argmax()))
    sequences = [list(prompt_ids) + [tokens[0]], list(short) + [tokens[1]]]
    for _ in range(6):
        step = runner.decode(batch, tokens, [None, None])
        for row, seq in enumerate(sequences):
            expected = reference(loaded.model, seq)[0][-1]
            assert torch.allclose(step[row], expected, atol=TOLERANCE, rtol=0), row
            seq.append(int(expected.argmax()))
        tokens = [seq[-1] for seq in sequences]


def test_base_prompt_of_a_peft_wrapped_model_uses_the_base_weights(loaded, prompt_ids) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False).model
    ref_logits = reference(base, prompt_ids)[0][-1]
    torch.manual_seed(3)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    wrapped = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                              init_lora_weights=False), adapter_name="tuned").eval()
    runner = NativeRunner(wrapped, loaded.tokenizer, "cpu")
    runner.peft_wrapped = True
    base_logits, _ = runner.prefill(prompt_ids, None)
    assert runner.decoder().prefills_adapter("tuned")  # the adapter's prompt runs natively too
    tuned_logits, tuned_layers = runner.prefill(prompt_ids, "tuned")
    assert torch.allclose(base_logits, ref_logits, atol=TOLERANCE, rtol=0)
    assert not torch.allclose(tuned_logits, ref_logits, atol=1e-2, rtol=0)  # the adapter really applies
    wrapped.set_adapter("tuned")
    tuned_ref, tuned_cache = reference(wrapped, prompt_ids)  # PEFT's own forward with the adapter active
    assert torch.allclose(tuned_logits, tuned_ref[-1], atol=TOLERANCE, rtol=0)
    for (keys, values), ref in zip(tuned_layers, tuned_cache.layers, strict=True):
        assert torch.allclose(keys, ref.keys, atol=TOLERANCE, rtol=0)
        assert torch.allclose(values, ref.values, atol=TOLERANCE, rtol=0)


def test_adapter_rows_decode_natively_as_peft_computes_them(loaded, prompt_ids) -> None:
    """Plain LoRA adapters run inside the native decode step: each row's logits match PEFT's modules
    (per-row adapter routing, base rows beside them), and a row's bits do not depend on its batch."""
    from peft import LoraConfig, get_peft_model

    base = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False).model
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(5)
    wrapped = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False),
                             adapter_name="tuned")
    wrapped.add_adapter("other", LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "down_proj"],
                                            init_lora_weights=False))
    wrapped.eval()
    runner = NativeRunner(wrapped, loaded.tokenizer, "cpu")
    runner.peft_wrapped = True
    decoder = runner.decoder()
    assert decoder.lora_table is not None and set(decoder.lora_table.slots) == {"tuned", "other"}
    adapters = ["tuned", None, "other"]
    prompts = [prompt_ids, prompt_ids[:-5], prompt_ids[:-2]]

    def batch_of(rows: list[int]):
        batch = runner.new_batch(4)
        for row in rows:
            _, layers = runner.prefill(prompts[row], adapters[row])
            batch.append_row(layers, len(prompts[row]))
        return batch

    native, reference, alone = batch_of([0, 1, 2]), batch_of([0, 1, 2]), batch_of([0])
    tokens = [1, 2, 3]
    for _ in range(4):
        got = runner.decode(native, tokens, adapters)
        table, decoder.lora_table = decoder.lora_table, None  # PEFT's modules, layer by layer
        try:
            expected = runner.decode(reference, tokens, adapters)
        finally:
            decoder.lora_table = table
        assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0)
        assert torch.equal(runner.decode(alone, tokens[:1], adapters[:1])[0], got[0])
        tokens = [int(t) for t in expected.argmax(dim=-1)]
    # the adapters really change the output
    assert not torch.allclose(got[0], got[1], atol=1e-2)
