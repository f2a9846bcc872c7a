"""The native path: Llama-architecture models on the CPU through the engine's own decoder (decoder.py)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from .decoder import FusedWeights, LlamaDecoder
from .kvcache import SlotCache
from .prefix_cache import BLOCK as PREFIX_BLOCK
from .prefix_cache import Layers, block_keys
from .runner import ModelRunner


class NativeRunner(ModelRunner):
    """LlamaDecoder steps over a position-major slot cache; prompts through its own pass where it can serve
    them (base weights, plain LoRA), else the model's forward; the prefix cache where reuse is exact."""

    kind = "native"
    heads_first = False

    def __init__(self, model: Any, tokenizer: Any, device: str, *, prefix_cache_bytes: int = 0,
                 kv_budget_bytes: int | None = None, packed_weights: bool = True) -> None:
        self._packed_weights = packed_weights
        self._decoder: LlamaDecoder | None = None
        self._decoder_key: tuple[Any, ...] | None = None
        super().__init__(model, tokenizer, device, prefix_cache_bytes=prefix_cache_bytes,
                         kv_budget_bytes=kv_budget_bytes)

    def _weights_changed(self) -> None:
        # The weights may have changed (a merge replaces them): forget every fused copy, and build the
        # decoder now rather than in the first request's decode step.
        self._weights = FusedWeights(self._packed_weights)
        self._decoder, self._decoder_key = None, None
        self.decoder()

    def decoder(self) -> LlamaDecoder:
        # Loading or deleting an adapter on a PEFT model adds or removes LoRA layers in place:
        # rebuild when the set of adapters changes too.
        key = (id(self.model), tuple(sorted(getattr(self.model, "peft_config", {}) or {})))
        if self._decoder is None or key != self._decoder_key:
            self._decoder = LlamaDecoder(self.model, self._weights)
            self._decoder_key = key
        return self._decoder

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[torch.Tensor, Layers]:
        decoder = self.decoder()
        if decoder.prefill_layers is not None if adapter is None else decoder.prefills_adapter(adapter):
            if self._exact_prompts(decoder):
                # Reuse only where it gives the same bits (batched = solo must hold, hit or not): the
                # packed kernels' rows, and the LoRA deltas', do not depend on each other. Without a
                # cache, MKL.
                _, past = self.prefix_cache.lookup(adapter, prompt_ids)
                logits, layers = decoder.prefill(prompt_ids, past, exact=True, adapter=adapter)
                self.prefix_cache.store(adapter, prompt_ids, layers)
                return logits, layers
            return decoder.prefill(prompt_ids, adapter=adapter)
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.config)
        out = self.model(input_ids=input_ids, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs([adapter]))
        return out.logits[0, -1], [(layer.keys, layer.values) for layer in cache.layers]

    def admit(self, batch: SlotCache, layers: Layers, prompt_ids: list[int], adapter: str | None) -> None:
        batch.append_row(layers, len(prompt_ids), self.shared_blocks(prompt_ids, adapter))

    def shared_blocks(self, prompt_ids: list[int], adapter: str | None) -> tuple[bytes, ...]:
        """The prefix-cache keys of a prompt's full blocks when its prefill gives the cache's bits there (then
        rows with the same leading blocks hold identical keys and values, and decode reads them once)."""
        decoder = self.decoder()
        if not self._exact_prompts(decoder) or (adapter is not None and not decoder.prefills_adapter(adapter)):
            return ()
        return tuple(block_keys(adapter, prompt_ids, len(prompt_ids) // PREFIX_BLOCK))

    def _exact_prompts(self, decoder: LlamaDecoder) -> bool:
        return decoder.exact_prefill and self.prefix_cache.enabled

    @torch.inference_mode()
    def decode(self, batch: SlotCache, tokens: list[int], adapters: list[str | None]) -> torch.Tensor:
        return self.decoder().step(batch, tokens, self._adapter_names(adapters))
