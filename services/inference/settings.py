"""Typed settings of the inference service (env names fixed by the owner's notes)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.settings import CommonSettings

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"
NO_EMBEDDINGS = "none"  # AION_EMBED_MODEL=none: a chat-only service (embeddings served elsewhere)

DEFAULT_SYSTEM_PROMPT = (
    "Você é a AION, assistente especialista da plataforma. Responda em PT-BR, cite fontes internas "
    "quando pertinente e mantenha objetividade."
)


class InferenceSettings(CommonSettings):
    base_model: str = Field(default=DEFAULT_BASE_MODEL, validation_alias="AION_BASE_MODEL")
    embed_model: str = Field(default=DEFAULT_EMBED_MODEL, validation_alias="AION_EMBED_MODEL")
    adapter_dir: Path | None = Field(default=None, validation_alias="AION_ADAPTER_DIR")
    model_cache_dir: Path | None = Field(default=None, validation_alias="AION_MODEL_CACHE_DIR")
    host: str = Field(default="127.0.0.1", validation_alias="AION_HOST")
    port: int = Field(default=8008, ge=1, le=65535, validation_alias="AION_PORT")
    # auto, cpu, cuda or cuda:N (which GPU this service uses; the trainer has its own setting)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", validation_alias="AION_DEVICE")
    load_in_4bit: Literal["auto", "true", "false"] = Field(default="auto", validation_alias="AION_LOAD_IN_4BIT")
    # Weights (or nf4's compute) dtype; auto: bf16 on GPUs that have it, fp16 on older ones (T4, V100), fp32 on CPU.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(default="auto", validation_alias="AION_DTYPE")
    # Which engine path serves the model (engine/runner.py): auto takes the native decoder for Llama models on
    # the CPU and the model's own forward everywhere else.
    runner: Literal["auto", "native", "transformers"] = Field(default="auto", validation_alias="AION_RUNNER")
    # The most the running batch's keys and values may take; unset: 90% of the GPU memory left after the
    # model is loaded (less a margin), or a quarter of the RAM on the CPU. A request waits while it would
    # not fit beside the running ones; one that cannot fit at all gets a 400.
    kv_cache_mb: int | None = Field(default=None, ge=1, validation_alias="AION_KV_CACHE_MB")
    max_new_tokens: int = Field(default=512, ge=1, validation_alias="AION_MAX_NEW_TOKENS")
    temperature: float = Field(default=0.6, ge=0.0, le=2.0, validation_alias="AION_TEMPERATURE")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, validation_alias="AION_TOP_P")
    # Defaults for requests that do not send them (OpenAI semantics, on generated tokens only).
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, validation_alias="AION_FREQUENCY_PENALTY")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, validation_alias="AION_PRESENCE_PENALTY")
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, validation_alias="AION_SYSTEM_PROMPT")
    max_batch_size: int = Field(default=16, ge=1, le=256, validation_alias="AION_MAX_BATCH_SIZE")
    max_queue: int = Field(default=64, ge=1, validation_alias="AION_MAX_QUEUE")
    threads: int | None = Field(default=None, ge=1, validation_alias="AION_THREADS")
    inference_token: str | None = Field(default=None, validation_alias="AION_INFERENCE_TOKEN")
    max_embed_inputs: int = Field(default=256, ge=1, validation_alias="AION_MAX_EMBED_INPUTS")
    # The CPU decode kernels (services/inference/engine/kernel_library.py): where their compiled library is
    # cached (default ~/.cache/aion/kernels), and a switch to decode with fp32 weights instead.
    kernel_cache_dir: Path | None = Field(default=None, validation_alias="AION_KERNEL_CACHE_DIR")
    quantized_decode: bool = Field(default=True, validation_alias="AION_QUANTIZED_DECODE")
    # Keys and values of prompt prefixes kept for later prompts that start the same way (the system
    # prompt, a conversation's earlier turns); 0 turns it off. engine/prefix_cache.py says when it applies.
    prefix_cache_mb: int = Field(default=256, ge=0, le=65536, validation_alias="AION_PREFIX_CACHE_MB")

    # Image generation (services/inference/images.py): a diffusers pipeline, a Hugging Face id or a local
    # folder; empty turns it off (no package ships a small real diffusion model to default to).
    image_model: str | None = Field(default=None, validation_alias="AION_IMAGE_MODEL")
    image_device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", validation_alias="AION_IMAGE_DEVICE")
    # Load at start instead of on the first request (a Stable Diffusion load takes 10-60 s).
    image_preload: bool = Field(default=False, validation_alias="AION_IMAGE_PRELOAD")
    # Memory savers: attention computed in slices, the VAE decoding one image at a time, and (CUDA only)
    # weights kept in CPU memory and moved to the GPU one model at a time.
    image_attention_slicing: bool = Field(default=False, validation_alias="AION_IMAGE_ATTENTION_SLICING")
    image_vae_slicing: bool = Field(default=True, validation_alias="AION_IMAGE_VAE_SLICING")
    image_cpu_offload: bool = Field(default=False, validation_alias="AION_IMAGE_CPU_OFFLOAD")
    # Requests waiting behind the one generating; one more is refused with 503 and Retry-After.
    image_max_queue: int = Field(default=4, ge=0, le=256, validation_alias="AION_IMAGE_MAX_QUEUE")
    image_max_side: int = Field(default=1024, ge=64, le=4096, validation_alias="AION_IMAGE_MAX_SIDE")
    image_max_steps: int = Field(default=100, ge=1, le=100_000, validation_alias="AION_IMAGE_MAX_STEPS")
    image_max_n: int = Field(default=4, ge=1, le=16, validation_alias="AION_IMAGE_MAX_N")

    @field_validator("image_model", mode="before")
    @classmethod
    def _blank_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # No chat model at all: /v1/embeddings and /health only (beside vLLM or another server for chat).
    embeddings_only: bool = Field(default=False, validation_alias="AION_EMBEDDINGS_ONLY")

    @model_validator(mode="after")
    def _serves_something(self) -> InferenceSettings:
        if self.embeddings_only and self.embed_model == NO_EMBEDDINGS:
            raise ValueError(f"AION_EMBEDDINGS_ONLY=true (--embeddings-only) with AION_EMBED_MODEL={NO_EMBEDDINGS} "
                             "would serve nothing: name an embedding model, or drop --embeddings-only")
        return self

    def cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_path("models")


@lru_cache
def get_settings() -> InferenceSettings:
    return InferenceSettings()
