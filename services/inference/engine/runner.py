"""Forward passes on the shared model: prefill of one prompt, and one decode step for the batch."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import DynamicCache

from .batch import BatchCache
from .decoder import BASE_ADAPTER, FusedWeights, LlamaDecoder, unsupported_reason
from .kvcache import SlotCache
from .prefix_cache import BLOCK as PREFIX_BLOCK
from .prefix_cache import PrefixCache, block_keys

logger = logging.getLogger(__name__)

Batch = BatchCache | SlotCache


class ModelRunner:
    """Owns the model object. Only the engine thread calls it.

    Whoever changes the weights must assign `runner.model` (even the same object): the fast
    decoder keeps fused copies of some weights and rebuilds them on that assignment.
    """

    def __init__(self, model: Any, tokenizer: Any, device: str, *, fast_decode: bool = True,
                 packed_weights: bool = True, prefix_cache_bytes: int = 0) -> None:
        self.tokenizer = tokenizer
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.device = device
        self.peft_wrapped = False
        self._fast_decode = fast_decode
        self._packed_weights = packed_weights
        self._decoder: LlamaDecoder | None = None
        self._decoder_key: tuple[Any, ...] | None = None
        self.model = model
        config = model.config
        self.max_context = int(getattr(config, "max_position_embeddings", 2048))
        eos = model.generation_config.eos_token_id if model.generation_config else None
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
        reason = unsupported_reason(model) if self._fast_decode else "disabled"
        if reason and self._fast_decode:
            logger.info("fast decode path not used: %s; decoding through the model's forward", reason)
        self.fast = reason is None
        # The weights may have changed (a merge edits them in place): forget every fused copy, and
        # build the decoder now rather than in the first request's decode step.
        self._weights = FusedWeights(self._packed_weights)
        self._decoder, self._decoder_key = None, None
        self.prefix_cache.clear()  # computed with the weights that were
        if self.fast:
            self._fast_decoder()

    @property
    def config(self) -> Any:
        return self.model.config

    def new_batch(self, max_rows: int) -> Batch:
        """An empty running batch of the kind this runner decodes."""
        if self.fast:
            return SlotCache(max_rows, self.max_context)
        return BatchCache(self.config)

    def fits(self, batch: Batch) -> bool:
        return isinstance(batch, SlotCache) == self.fast

    def _adapter_names(self, adapters: list[str | None]) -> list[str] | None:
        if not self.peft_wrapped:
            return None
        return [a or BASE_ADAPTER for a in adapters]

    def _adapter_kwargs(self, adapters: list[str | None]) -> dict[str, Any]:
        names = self._adapter_names(adapters)
        return {} if names is None else {"adapter_names": names}

    def _fast_decoder(self) -> LlamaDecoder:
        # Loading or deleting an adapter on a PEFT model adds or removes LoRA layers in place:
        # rebuild when the set of adapters changes too.
        key = (id(self._model), tuple(sorted(getattr(self._model, "peft_config", {}) or {})))
        if self._decoder is None or key != self._decoder_key:
            self._decoder = LlamaDecoder(self._model, self._weights)
            self._decoder_key = key
        return self._decoder

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run one prompt; return its last-position logits and its KV cache layers."""
        decoder = self._fast_decoder() if self.fast else None
        if decoder is not None and (decoder.prefill_layers is not None if adapter is None
                                    else decoder.prefills_adapter(adapter)):
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
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs([adapter]))
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return out.logits[0, -1], layers

    def shared_blocks(self, prompt_ids: list[int], adapter: str | None) -> tuple[bytes, ...]:
        """The prefix-cache keys of a prompt's full blocks when its prefill gives the cache's bits there (then
        rows with the same leading blocks hold identical keys and values, and decode reads them once)."""
        if not self.fast:
            return ()
        decoder = self._fast_decoder()
        if not self._exact_prompts(decoder) or (adapter is not None and not decoder.prefills_adapter(adapter)):
            return ()
        return tuple(block_keys(adapter, prompt_ids, len(prompt_ids) // PREFIX_BLOCK))

    def _exact_prompts(self, decoder: LlamaDecoder) -> bool:
        return decoder.exact_prefill and self.prefix_cache.enabled

    @torch.inference_mode()
    def decode(self, batch: Batch, tokens: list[int], adapters: list[str | None]) -> torch.Tensor:
        """Feed each row its last token; return next-token logits (rows, vocab)."""
        if isinstance(batch, SlotCache):
            return self._fast_decoder().step(batch, tokens, self._adapter_names(adapters))
        positions = batch.positions()
        mask = batch.extend_mask()
        input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        cache = batch.as_cache()
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **self._adapter_kwargs(adapters))
        batch.absorb(out.past_key_values)
        return out.logits[:, -1]
