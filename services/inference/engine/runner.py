"""What the engine asks of the model, and which path runs it: one runner per path, chosen once at load.

- `NativeRunner` (native_runner.py): Llama-architecture models on the CPU through the engine's own
  decoder (LlamaDecoder: the packed-weight kernels where the CPU has AVX-512, fp32 weights and SDPA
  otherwise) over a position-major slot cache, with the exact prefix cache.
- `TransformersRunner` (hf_runner.py): any causal LM transformers loads, on CUDA or the CPU, 4-bit
  included, through the model's own forward over a head-major slot cache.

Only the engine thread calls a runner. Whoever changes the weights must assign `runner.model` (even the
same object): runners keep derived copies (fused weights, the prefix cache) and rebuild them then.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch

from .decoder import BASE_ADAPTER, unsupported_reason
from .kvcache import SlotCache
from .prefix_cache import Layers, PrefixCache

logger = logging.getLogger(__name__)

RunnerChoice = Literal["auto", "native", "transformers"]


class ModelRunner(ABC):
    kind: str  # "native" | "transformers", for /health and the logs
    heads_first: bool  # the slot cache layout this runner's attention reads

    def __init__(self, model: Any, tokenizer: Any, device: str, *, prefix_cache_bytes: int = 0,
                 kv_budget_bytes: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.peft_wrapped = False
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.kv_budget_bytes = kv_budget_bytes
        self.model = model
        config = self.config
        self.max_context = int(getattr(config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)

    @property
    def model(self) -> Any:
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self._model = model
        self.prefix_cache.clear()  # computed with the weights that were
        # transformers renamed the forward's `past_key_values` to `cache` (5.2x); take whichever it has.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        self._weights_changed()

    @abstractmethod
    def _weights_changed(self) -> None:
        """The model object or its weights changed: drop whatever was derived from them."""

    @property
    def config(self) -> Any:
        return self.model.config

    def kv_position_bytes(self) -> int:
        """Keys and values of one position of one row, over every layer, as the slot cache holds them."""
        config = self.config
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return config.num_hidden_layers * 2 * kv_heads * head_dim * self.kv_dtype().itemsize

    def kv_dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def new_batch(self, max_rows: int) -> SlotCache:
        """An empty running batch of this runner's layout, bounded by the KV budget."""
        return SlotCache(max_rows, self.max_context, position_bytes=self.kv_position_bytes(),
                         max_bytes=self.kv_budget_bytes, heads_first=self.heads_first)

    @abstractmethod
    def prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[torch.Tensor, Layers]:
        """Run one prompt; return its last-position logits and its keys/values per layer (1, kv heads, n, dim)."""

    def admit(self, batch: SlotCache, layers: Layers, prompt_ids: list[int], adapter: str | None) -> None:
        """Take a prefilled prompt into the running batch."""
        batch.append_row(layers, len(prompt_ids))

    @abstractmethod
    def decode(self, batch: SlotCache, tokens: list[int], adapters: list[str | None]) -> torch.Tensor:
        """Feed each row its last token; return next-token logits (rows, vocab)."""

    def _adapter_names(self, adapters: list[str | None]) -> list[str] | None:
        if not self.peft_wrapped:
            return None
        return [a or BASE_ADAPTER for a in adapters]

    def _adapter_kwargs(self, adapters: list[str | None]) -> dict[str, Any]:
        names = self._adapter_names(adapters)
        return {} if names is None else {"adapter_names": names}


def choose_runner(model: Any, tokenizer: Any, device: str, *, choice: RunnerChoice = "auto",
                  prefix_cache_bytes: int = 0, kv_budget_bytes: int | None = None) -> ModelRunner:
    """The runner for this model and device: native for Llama models on the CPU, else the model's forward."""
    from .hf_runner import TransformersRunner
    from .native_runner import NativeRunner

    reason = unsupported_reason(model)
    if device != "cpu":
        reason = reason or f"the native decoder runs on the CPU, not {device}"
    if choice == "native" and reason:
        raise ValueError(f"AION_RUNNER=native cannot serve this model: {reason}")
    if choice == "native" or (choice == "auto" and reason is None):
        return NativeRunner(model, tokenizer, device, prefix_cache_bytes=prefix_cache_bytes,
                            kv_budget_bytes=kv_budget_bytes)
    if choice == "auto":
        logger.info("native decoder not used (%s): decoding through the model's forward", reason)
    return TransformersRunner(model, tokenizer, device, kv_budget_bytes=kv_budget_bytes)
