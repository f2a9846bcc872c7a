"""Typed settings of the trainer: base model, LoRA shape, optimisation, data split and gate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.inference.settings import DEFAULT_BASE_MODEL, DEFAULT_SYSTEM_PROMPT
from shared.settings import CommonSettings


class TrainerSettings(CommonSettings):
    # Same default as AION_BASE_MODEL, and the same converter/cache, so the adapter fits the served weights.
    lora_base: str = Field(default=DEFAULT_BASE_MODEL, validation_alias="AION_LORA_BASE")
    model_cache_dir: Path | None = Field(default=None, validation_alias="AION_MODEL_CACHE_DIR")
    # Adapters, temp folders and datasets live here; default <AION_DATA_DIR>/training.
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")
    # Seed-format rows carry no system prompt: use the one the inference service answers with.
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, validation_alias="AION_SYSTEM_PROMPT")

    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", validation_alias="AION_TRAIN_DEVICE")
    # auto: nf4 (QLoRA) on CUDA; full precision on CPU, where nf4 is slower and saves nothing for 135M.
    load_in_4bit: Literal["auto", "true", "false"] = Field(default="auto",
                                                           validation_alias="AION_TRAIN_LOAD_IN_4BIT")
    # auto: on with CUDA (memory for a 7B), off on CPU (it only costs time there).
    gradient_checkpointing: Literal["auto", "true", "false"] = Field(
        default="auto", validation_alias="AION_TRAIN_GRADIENT_CHECKPOINTING")
    threads: int | None = Field(default=None, ge=1, validation_alias="AION_TRAIN_THREADS")

    lora_r: int = Field(default=8, ge=1, le=256, validation_alias="AION_TRAIN_LORA_R")
    lora_alpha: int = Field(default=16, ge=1, validation_alias="AION_TRAIN_LORA_ALPHA")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, validation_alias="AION_TRAIN_LORA_DROPOUT")
    # Comma-separated in the environment. All linear layers, as QLoRA recommends: measured on the
    # 135M default, attention-only (q,v) did not learn a fact in 28 steps, and attention + MLP
    # learned it with less damage to general answers than q,k,v,o.
    lora_target_modules: Annotated[list[str], NoDecode] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        validation_alias="AION_TRAIN_LORA_TARGET_MODULES")

    # 1e-3 teaches the 135M default a fact in ~16 steps (FINDINGS); a 7B base wants ~2e-4.
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0, validation_alias="AION_TRAIN_LEARNING_RATE")
    weight_decay: float = Field(default=0.0, ge=0.0, validation_alias="AION_TRAIN_WEIGHT_DECAY")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, validation_alias="AION_TRAIN_WARMUP_RATIO")
    max_grad_norm: float = Field(default=1.0, gt=0.0, validation_alias="AION_TRAIN_MAX_GRAD_NORM")
    # Measured on the default model: a third epoch at 1e-3 adds forgetting, not learning.
    epochs: int = Field(default=2, ge=1, le=100, validation_alias="AION_TRAIN_EPOCHS")
    # A cap on optimizer steps whatever the data size (0: no cap), so a night's job has a bounded cost.
    max_steps: int = Field(default=300, ge=0, validation_alias="AION_TRAIN_MAX_STEPS")
    batch_size: int = Field(default=4, ge=1, le=512, validation_alias="AION_TRAIN_BATCH_SIZE")
    grad_accumulation: int = Field(default=1, ge=1, le=512, validation_alias="AION_TRAIN_GRAD_ACCUMULATION")
    max_seq_len: int = Field(default=1024, ge=16, validation_alias="AION_TRAIN_MAX_SEQ_LEN")
    seed: int = Field(default=42, validation_alias="AION_TRAIN_SEED")

    heldout_fraction: float = Field(default=0.1, gt=0.0, lt=1.0, validation_alias="AION_TRAIN_HELDOUT_FRACTION")
    # The owner's own examples (replay not counted) a job needs: with fewer, the held-out split is one
    # or two rows and the gate's verdict is noise. The scheduler queues jobs at the same threshold.
    min_examples: int = Field(default=20, ge=1, validation_alias="AION_TRAIN_MIN_EXAMPLES")
    # Replay rows per training row (capped by the replay file's size): general Q&A in the base's own
    # greedy words, checked correct, so forgetting shows up as loss and is trained back.
    replay_ratio: float = Field(default=1.0, ge=0.0, le=10.0, validation_alias="AION_TRAIN_REPLAY_RATIO")
    replay_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_REPLAY_FILE")

    # Gate: the candidate's regression accuracy may fall at most this much below the current model's
    # and the base's (the base too, so small drops cannot pile up over many promotions).
    # 0.05 of the shipped 26 questions allows one miss.
    regression_margin: float = Field(default=0.05, ge=0.0, le=1.0, validation_alias="AION_TRAIN_REGRESSION_MARGIN")
    # The candidate's held-out loss must beat the current's by at least this much.
    min_heldout_improvement: float = Field(default=0.0, ge=0.0,
                                           validation_alias="AION_TRAIN_MIN_HELDOUT_IMPROVEMENT")
    regression_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_REGRESSION_FILE")
    # Room for the base's own wordy answers ("To add 2 and 3, you simply ... = 5"): 24 cut correct ones off.
    regression_max_new_tokens: int = Field(default=48, ge=1, le=512,
                                           validation_alias="AION_TRAIN_REGRESSION_MAX_NEW_TOKENS")
    eval_batch_size: int = Field(default=16, ge=1, le=512, validation_alias="AION_TRAIN_EVAL_BATCH_SIZE")

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def cache_dir(self) -> Path:
        """Where the converted base model lives (shared with the inference service)."""
        return self.model_cache_dir or self.data_path("models")

    def root(self) -> Path:
        path = self.train_root or self.data_dir / "training"
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache
def get_settings() -> TrainerSettings:
    return TrainerSettings()
