"""Forward passes on the shared model: prefill of one prompt, and one decode step for the batch."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from .batch import BatchCache

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class ModelRunner:
    """Owns the model object. Only the engine thread calls it."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.peft_wrapped = False
        config = model.config
        self.max_context = int(getattr(config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)

    @property
    def config(self) -> Any:
        return self.model.config

    def _adapter_kwargs(self, adapters: list[str | None]) -> dict[str, Any]:
        if not self.peft_wrapped:
            return {}
        return {"adapter_names": [a or BASE_ADAPTER for a in adapters]}

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run one prompt; return its last-position logits and its KV cache layers."""
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.config)
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs([adapter]))
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return out.logits[0, -1], layers

    @torch.inference_mode()
    def decode(self, batch: BatchCache, tokens: list[int], adapters: list[str | None]) -> torch.Tensor:
        """Feed each row its last token; return next-token logits (rows, vocab)."""
        positions = batch.positions()
        mask = batch.extend_mask()
        input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        cache = batch.as_cache()
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **self._adapter_kwargs(adapters))
        batch.absorb(out.past_key_values)
        return out.logits[:, -1]
