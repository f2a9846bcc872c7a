"""Typed settings of the trainer: base model, LoRA shape, optimisation, data split and gate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.gateway.services.prompt import DEFAULT_RAG_SYSTEM_PROMPT, DEFAULT_RAG_SYSTEM_PROMPT_EN
from services.inference.settings import DEFAULT_BASE_MODEL, DEFAULT_SYSTEM_PROMPT
from shared.settings import CommonSettings

from .model_size import SizeDefaults, defaults_for


class TrainerSettings(CommonSettings):
    # Same default as AION_BASE_MODEL, and the same converter/cache, so the adapter fits the served weights.
    lora_base: str = Field(default=DEFAULT_BASE_MODEL, validation_alias="AION_LORA_BASE")
    model_cache_dir: Path | None = Field(default=None, validation_alias="AION_MODEL_CACHE_DIR")
    # Adapters, temp folders and datasets live here; default <AION_DATA_DIR>/training.
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")
    # Seed-format rows that carry no system prompt get the one the inference service answers with.
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, validation_alias="AION_SYSTEM_PROMPT")
    # The gateway's RAG persona prompts (Portuguese, English): replay rows and the RAG regression set are
    # asked with the one of their question's language, as the gateway would ask them.
    rag_system_prompt: str = Field(default=DEFAULT_RAG_SYSTEM_PROMPT, validation_alias="AION_RAG_SYSTEM_PROMPT")
    rag_system_prompt_en: str = Field(default=DEFAULT_RAG_SYSTEM_PROMPT_EN, validation_alias="AION_RAG_SYSTEM_PROMPT_EN")

    # auto | cpu | cuda | cuda:N (which GPU: cuda:1 keeps training off the GPU inference serves from).
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", validation_alias="AION_TRAIN_DEVICE")
    # Mixed precision for the forward passes: auto (bf16 on CUDA where supported, else fp16; off on CPU),
    # off, bf16 or fp16 (fp16 on CUDA only: it needs loss scaling).
    autocast: Literal["auto", "off", "bf16", "fp16"] = Field(default="auto", validation_alias="AION_TRAIN_AUTOCAST")
    # auto: nf4 (QLoRA) on CUDA; full precision on CPU, where nf4 is slower and saves nothing for 135M.
    load_in_4bit: Literal["auto", "true", "false"] = Field(default="auto",
                                                           validation_alias="AION_TRAIN_LOAD_IN_4BIT")
    # auto: on with CUDA (memory for a 7B), and on CPU when rows are long (over 1,024 tokens: grounded RAG
    # rows are), where a batch's activations would take gigabytes; off otherwise (it only costs time).
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

    # Unset: by the base model's size (trainer/model_size.py): 3e-4 under 1B parameters (measured on
    # nightly grounded rows: 1e-3 teaches the 135M default a fact in ~16 steps but every night's adapter
    # forgot general answers; docs/benchmarks.md), 2e-4 up to 10B (QLoRA's value for 7B), 1e-4 above.
    learning_rate: float | None = Field(default=None, gt=0.0, le=1.0, validation_alias="AION_TRAIN_LEARNING_RATE")
    weight_decay: float = Field(default=0.0, ge=0.0, validation_alias="AION_TRAIN_WEIGHT_DECAY")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, validation_alias="AION_TRAIN_WARMUP_RATIO")
    max_grad_norm: float = Field(default=1.0, gt=0.0, validation_alias="AION_TRAIN_MAX_GRAD_NORM")
    # Measured on the default model: a third epoch at 1e-3 adds forgetting, not learning.
    epochs: int = Field(default=2, ge=1, le=100, validation_alias="AION_TRAIN_EPOCHS")
    # A cap on optimizer steps whatever the data size (0: no cap), so a night's job has a bounded cost.
    max_steps: int = Field(default=300, ge=0, validation_alias="AION_TRAIN_MAX_STEPS")
    batch_size: int = Field(default=4, ge=1, le=512, validation_alias="AION_TRAIN_BATCH_SIZE")
    grad_accumulation: int = Field(default=1, ge=1, le=512, validation_alias="AION_TRAIN_GRAD_ACCUMULATION")
    # Unset: by model size (2048 under 1B, 4096 above). A grounded row holds the RAG message with its
    # passages (~1,500 tokens at the default 8 x 200), so shorter limits reject most rows as too_long.
    max_seq_len: int | None = Field(default=None, ge=16, validation_alias="AION_TRAIN_MAX_SEQ_LEN")
    seed: int = Field(default=42, validation_alias="AION_TRAIN_SEED")

    heldout_fraction: float = Field(default=0.1, gt=0.0, lt=1.0, validation_alias="AION_TRAIN_HELDOUT_FRACTION")
    # The owner's own examples (replay not counted) a job needs: with fewer, the held-out split is one
    # or two rows and the gate's verdict is noise. The scheduler queues jobs at the same threshold.
    min_examples: int = Field(default=20, ge=1, validation_alias="AION_TRAIN_MIN_EXAMPLES")
    # Replay rows per training row, capped by each file's size. Grounded replay: answers about the documents
    # shipped in aion/demo_docs, in the live RAG prompt (trainer/rag_replay.jsonl), so the adapter keeps
    # answering from context and saying "not found" (long rows: a RAG prompt each). General replay: the
    # base's own correct answers to general questions (trainer/general_replay.jsonl, short rows), so it
    # does not forget what the general regression set checks.
    replay_ratio: float = Field(default=0.5, ge=0.0, le=10.0, validation_alias="AION_TRAIN_REPLAY_RATIO")
    replay_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_REPLAY_FILE")
    general_replay_ratio: float = Field(default=1.0, ge=0.0, le=10.0,
                                        validation_alias="AION_TRAIN_GENERAL_REPLAY_RATIO")
    general_replay_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_GENERAL_REPLAY_FILE")
    # Train each grounded row with its passages in a seeded random order and its citations renumbered:
    # retrieval ranks the answer's passage first, so rows as logged teach "cite [1]" (trainer/passage_order.py).
    shuffle_passages: bool = Field(default=True, validation_alias="AION_TRAIN_SHUFFLE_PASSAGES")

    # Gate: the candidate's regression accuracy may fall at most this much below the current model's
    # and the base's (the base too, so small drops cannot pile up over many promotions).
    # 0.05 of the shipped 26 questions allows one miss.
    regression_margin: float = Field(default=0.05, ge=0.0, le=1.0, validation_alias="AION_TRAIN_REGRESSION_MARGIN")
    # The candidate's held-out loss must beat the current's by at least this much.
    min_heldout_improvement: float = Field(default=0.0, ge=0.0,
                                           validation_alias="AION_TRAIN_MIN_HELDOUT_IMPROVEMENT")
    regression_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_REGRESSION_FILE")
    # The RAG regression set (context + question: the answer in the reply and the right passage cited;
    # or "not found" when the context lacks it): each of the candidate's rates (answer, citation,
    # "not found") may fall at most this much below the current model's and the base's. 0.05 allows one
    # miss in 20 items of a kind: a set much smaller than that makes the gate reject on one flip.
    rag_regression_file: Path | None = Field(default=None, validation_alias="AION_TRAIN_RAG_REGRESSION_FILE")
    rag_regression_margin: float = Field(default=0.05, ge=0.0, le=1.0,
                                         validation_alias="AION_TRAIN_RAG_REGRESSION_MARGIN")
    # The RAG set's grounding gap (how much less likely a wrong reply about another passage of the same
    # context is than the right reply, per answer token) may fall at most this share below the current
    # model's and the base's: an adapter trained on replies that answer other questions loses it, while the
    # held-out rows, from the night being judged, cannot see such a night (docs/benchmarks.md).
    grounding_margin: float = Field(default=0.1, ge=0.0, le=10.0, validation_alias="AION_TRAIN_GROUNDING_MARGIN")
    # The gateway's own setting: a RAG-set reply counts as supported when the answer path would serve it
    # (support at or above this), so the gate's "supported rate" is the share users would get unreplaced.
    support_threshold: float = Field(default=0.6, ge=0.0, le=1.0, validation_alias="AION_SUPPORT_THRESHOLD")
    # The gateway's own setting too: RAG-set replies are judged with their citation marks checked, as served.
    check_citations: bool = Field(default=True, validation_alias="AION_CHECK_CITATIONS")
    # Room for the base's own wordy answers ("To add 2 and 3, you simply ... = 5"): 24 cut correct ones off.
    regression_max_new_tokens: int = Field(default=48, ge=1, le=512,
                                           validation_alias="AION_TRAIN_REGRESSION_MAX_NEW_TOKENS")
    # Unset: by model size (8 under 1B, 2 up to 10B, 1 above): a 7B's eval batch of 16 long RAG rows
    # does not fit beside the model.
    eval_batch_size: int | None = Field(default=None, ge=1, le=512, validation_alias="AION_TRAIN_EVAL_BATCH_SIZE")
    # Tokens whose vocabulary logits are computed at once in the loss (answer tokens only, fp32): bounds
    # the loss's memory whatever the vocabulary (Qwen's 152k x 256 x 4 bytes = 156 MB).
    loss_chunk_tokens: int = Field(default=256, ge=1, le=65536, validation_alias="AION_TRAIN_LOSS_CHUNK_TOKENS")

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def rag_personas(self) -> dict[str, str]:
        return {"pt": self.rag_system_prompt, "en": self.rag_system_prompt_en}

    def for_model(self, parameters: int) -> TrainerSettings:
        """These settings with every size-dependent value left unset filled in for a base of `parameters`."""
        sized: SizeDefaults = defaults_for(parameters)
        update = {name: getattr(sized, name) for name in ("learning_rate", "eval_batch_size", "max_seq_len")
                  if getattr(self, name) is None}
        return self.model_copy(update=update)

    def sized(self, name: str) -> int | float:
        """A size-dependent value; refuses to guess when `for_model` was not applied."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"trainer setting {name} depends on the model size: call for_model() first")
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
