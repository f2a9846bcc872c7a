"""The QLoRA path on CPU: nf4 base, LoRA gradients alive even after a no-grad forward (FINDINGS:
without the bitsandbytes flag they silently fall ~10^4 after the first eval/generate)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.inference.loader import LoadedModel
from tests.trainer.conftest import trainer_settings
from tests.trainer.facts import fact_rows, write_jsonl
from trainer.base_model import load_base
from trainer.data_builder import build_dataset
from trainer.run_lora import attach_lora, collate, detach_lora, lora_grad_norm, train_adapter

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qlora")


@pytest.fixture(scope="module")
def nf4_base(workdir: Path) -> LoadedModel:
    loaded = load_base(trainer_settings(workdir, AION_TRAIN_LOAD_IN_4BIT="true"))
    assert loaded.quantization == "nf4"
    return loaded


def test_nf4_training_step_has_lora_gradients_after_a_generation(nf4_base: LoadedModel, workdir: Path) -> None:
    import bitsandbytes as bnb
    import torch

    settings = trainer_settings(workdir, AION_TRAIN_LOAD_IN_4BIT="true", AION_TRAIN_REPLAY_RATIO=0,
                                AION_TRAIN_GENERAL_REPLAY_RATIO=0)
    dataset = build_dataset([write_jsonl(workdir / "facts.jsonl", fact_rows()[:8])], nf4_base.tokenizer, settings)
    # The trigger: a no-grad forward, as serving or the evaluation gate does before training.
    prompt = nf4_base.tokenizer("Hello", return_tensors="pt")
    with torch.no_grad():
        nf4_base.model.generate(**prompt, max_new_tokens=2, do_sample=False,
                                pad_token_id=nf4_base.tokenizer.pad_token_id)

    model = attach_lora(nf4_base, settings)
    try:
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
        model.train()
        loss = model(**collate(dataset.train[:4], nf4_base.tokenizer.pad_token_id)).loss
        loss.backward()
        norm = lora_grad_norm(model)
        logger.info("nf4 LoRA gradient norm after a generation: %.3g (loss %.3f)", norm, float(loss))
    finally:
        nf4_base.model = detach_lora(model)
    # FINDINGS: 3.8e-3 healthy vs 3.5e-7 repacked (q,k,v,o only); 1.55 here with all linear layers.
    # The repack needs a CPU with avx512_bf16: where there is none this bound cannot fail, but the
    # flag assertion above still checks the fix everywhere.
    assert torch.isfinite(loss) and norm > 1e-4, norm


def test_nf4_train_adapter_saves_a_peft_folder(nf4_base: LoadedModel, workdir: Path) -> None:
    """The whole QLoRA path as CUDA runs it (activation checkpointing on), then the base restored."""
    settings = trainer_settings(workdir, AION_TRAIN_LOAD_IN_4BIT="true", AION_TRAIN_MAX_STEPS=2,
                                AION_TRAIN_REPLAY_RATIO=0, AION_TRAIN_GENERAL_REPLAY_RATIO=0,
                                AION_TRAIN_GRADIENT_CHECKPOINTING="true")
    dataset = build_dataset([write_jsonl(workdir / "facts.jsonl", fact_rows()[:8])], nf4_base.tokenizer, settings)
    result = train_adapter(nf4_base, dataset, settings.root() / "nf4-v1", settings)
    assert result.steps == 2 and result.quantization == "nf4"
    assert all(loss == loss and loss > 0 for loss in result.losses)
    assert (result.adapter_dir / "adapter_model.safetensors").stat().st_size > 0
    assert not any("lora_" in name for name, _ in nf4_base.model.named_parameters())
    assert not nf4_base.model.is_activation_checkpointing
