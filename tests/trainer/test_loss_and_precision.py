"""The trainer's GPU-minded paths, checked on CPU: the answer-only chunked loss equals the model's own
loss (values and gradients), bf16 autocast trains, and size-dependent defaults. A tiny Llama built
from a config keeps these fast; tests/trainer/test_learning_loop.py checks the loss on the real model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.trainer.conftest import SMOLLM2_PARAMETERS, trainer_settings
from trainer.data_builder import IGNORE_INDEX, BuiltDataset, Example
from trainer.loss import answer_loss
from trainer.model_size import count_parameters
from trainer.precision import autocast, autocast_dtype
from trainer.run_lora import collate, train_adapter
from trainer.settings import TrainerSettings


def tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def examples() -> list[Example]:
    """Rows of different lengths; only the tail of each (the answer) carries labels."""
    rows = []
    for i, (prompt, answer) in enumerate([(12, 5), (20, 9), (7, 3)]):
        ids = [(7 * i + 3 * j) % 290 + 5 for j in range(prompt + answer)]
        rows.append(Example(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:], key=str(i)))
    return rows


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunked_answer_loss_equals_the_models_loss_and_gradients(chunk: int) -> None:
    import torch

    model = tiny_llama()
    batch = collate(examples(), pad_id=0)
    plain = model(**batch).loss
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    summed, tokens = answer_loss(model, batch, chunk)
    assert tokens == 5 + 9 + 3  # every answer token, predicted from the position before it
    torch.testing.assert_close(summed / tokens, plain, rtol=1e-5, atol=1e-6)
    (summed / tokens).backward()  # each chunk's logits are recomputed in the backward pass
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


def test_the_loss_sees_lora_layers_through_the_peft_wrapper() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    batch = collate(examples(), pad_id=0)
    summed, tokens = answer_loss(model, batch, 3)
    torch.testing.assert_close(summed / tokens, model(**batch).loss, rtol=1e-5, atol=1e-6)
    with model.disable_adapter():
        base_loss = answer_loss(model, batch, 3)[0]
    assert not torch.isclose(summed, base_loss)


def test_bf16_autocast_on_cpu_trains_an_adapter(tmp_path: Path) -> None:
    import torch

    model = tiny_llama()
    batch = collate(examples(), pad_id=0)
    with torch.no_grad():
        full = answer_loss(model, batch, 8)[0]
        with autocast("cpu", torch.bfloat16):
            half = answer_loss(model, batch, 8)[0]
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, full, rtol=0.05, atol=0.0)

    settings = trainer_settings(tmp_path, AION_TRAIN_AUTOCAST="bf16", AION_TRAIN_MAX_STEPS=2, AION_TRAIN_BATCH_SIZE=2,
                                AION_TRAIN_WARMUP_RATIO=0, AION_TRAIN_LORA_TARGET_MODULES="q_proj,v_proj")
    base = SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0), device="cpu", quantization="fp32")
    result = train_adapter(base, BuiltDataset(train=examples(), heldout=[]), tmp_path / "bf16-v1", settings)
    assert result.precision == "bfloat16" and result.steps == 2
    assert all(loss == loss for loss in result.losses) and (tmp_path / "bf16-v1" / "adapter_model.safetensors").is_file()


def test_precision_choices() -> None:
    import torch

    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("off", "cuda:1") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="needs CUDA"):
        autocast_dtype("fp16", "cpu")


def test_defaults_follow_the_model_size(tmp_path: Path) -> None:
    base = TrainerSettings(_env_file=None, AION_DATA_DIR=str(tmp_path))
    with pytest.raises(RuntimeError, match="for_model"):
        base.sized("learning_rate")
    small, seven_b = base.for_model(SMOLLM2_PARAMETERS), base.for_model(7_615_616_512)
    assert (small.learning_rate, small.eval_batch_size, small.max_seq_len) == (3e-4, 8, 2048)
    assert (seven_b.learning_rate, seven_b.eval_batch_size, seven_b.max_seq_len) == (2e-4, 2, 4096)
    chosen = TrainerSettings(_env_file=None, AION_TRAIN_LEARNING_RATE=5e-5).for_model(7_615_616_512)
    assert chosen.learning_rate == 5e-5 and chosen.eval_batch_size == 2  # what the owner set wins
    model = tiny_llama()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("device", "ok"), [("cuda:1", True), ("cuda", True), ("cpu", True), ("gpu1", False),
                                            ("cuda:", False)])
def test_the_training_device_names_a_gpu(device: str, ok: bool) -> None:
    from pydantic import ValidationError

    if ok:
        assert TrainerSettings(_env_file=None, AION_TRAIN_DEVICE=device).device == device
    else:
        with pytest.raises(ValidationError, match="AION_TRAIN_DEVICE"):
            TrainerSettings(_env_file=None, AION_TRAIN_DEVICE=device)


@pytest.mark.parametrize(("setting", "device", "longest", "on"), [
    ("auto", "cpu", 400, False), ("auto", "cpu", 1800, True), ("auto", "cuda:1", 100, True),
    ("false", "cpu", 1800, False), ("true", "cpu", 10, True)])
def test_activation_checkpointing_for_long_rows(tmp_path: Path, setting: str, device: str, longest: int,
                                                on: bool) -> None:
    """Grounded rows are long: without checkpointing a CPU batch of them held ~10 GB of activations."""
    from trainer.run_lora import _uses_checkpointing

    settings = trainer_settings(tmp_path, AION_TRAIN_GRADIENT_CHECKPOINTING=setting)
    assert _uses_checkpointing(settings, device, longest) is on
