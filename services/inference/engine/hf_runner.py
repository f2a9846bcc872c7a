"""The transformers path: any causal LM through the model's own forward (CUDA, 4-bit, other architectures).

Prompts run one at a time with a DynamicCache (no padding), then their keys and values are copied once
into the running batch's head-major slot cache. A decode step hands the model a cache object over those
slots: every layer writes its new key and value in place at each row's own next position and attends
over a view of the rows' first positions, with a mask hiding each shorter row's unused tail. Nothing is
concatenated or copied per step (transformers' DynamicCache would copy every layer's cache on every
token, and a left-padded batch again on every join and leave).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, DynamicCache

from .kvcache import SlotCache
from .prefix_cache import Layers
from .runner import ModelRunner


class _SlotView(Cache):
    """The running batch's slot cache as the attention layers see it during one decode step."""

    def __init__(self, batch: SlotCache, positions: torch.Tensor, seen: int) -> None:
        super().__init__(layers=[])
        self.batch = batch
        self.positions = positions  # (rows,) each row's next position = where its new key goes
        self.row_index = torch.arange(len(positions), device=positions.device)
        self.seen = seen  # positions every row's view covers: the longest row's, the new one included

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.batch.keys[layer_idx], self.batch.values[layer_idx]
        # key_states: (rows, kv heads, 1, dim); the slots: (row capacity, kv heads, positions, dim)
        keys[self.row_index, :, self.positions] = key_states[:, :, 0]
        values[self.row_index, :, self.positions] = value_states[:, :, 0]
        rows = len(self.positions)
        return keys[:rows, :, :self.seen], values[:rows, :, :self.seen]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen - 1

    def __len__(self) -> int:
        return len(self.batch.keys)


class TransformersRunner(ModelRunner):
    kind = "transformers"
    heads_first = True

    def _weights_changed(self) -> None:
        config = self.config
        attention = getattr(config, "_attn_implementation", None) or "eager"
        if attention.startswith("flash"):
            raise ValueError(f"attention '{attention}' takes no per-row masks; load the model with sdpa or eager")
        # SDPA takes a boolean mask; the eager attention adds its mask to the scores.
        self._additive_mask = attention != "sdpa"
        types = list(getattr(config, "layer_types", None) or [])
        # Models with sliding-window layers take one mask per layer type (Gemma, Qwen2 with a window).
        self._window = getattr(config, "sliding_window", None) if "sliding_attention" in types else None

    def _mask(self, visible: torch.Tensor) -> torch.Tensor:
        """(rows, seen) True where a row attends -> the (rows, 1, 1, seen) mask its attention takes."""
        mask = visible[:, None, None, :]
        if self._additive_mask:
            dtype = self.kv_dtype()
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        return mask

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[torch.Tensor, Layers]:
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        # Plain layers for every layer, sliding ones included: the slots keep all positions, the mask hides
        # what a window does not see (a config-built cache would keep only the window's last positions).
        cache = DynamicCache()
        out = self.model(input_ids=input_ids, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs([adapter]))
        return out.logits[0, -1], [(layer.keys, layer.values) for layer in cache.layers]

    @torch.inference_mode()
    def decode(self, batch: SlotCache, tokens: list[int], adapters: list[str | None]) -> torch.Tensor:
        batch.reserve_step()
        positions = torch.tensor(batch.lengths, dtype=torch.long, device=self.device)
        seen = max(batch.lengths) + 1
        columns = torch.arange(seen, device=self.device)
        visible = columns < (positions + 1).unsqueeze(1)  # (rows, seen): each row's own positions only
        mask: torch.Tensor | dict[str, torch.Tensor] = self._mask(visible)
        if self._window is not None:
            local = visible & (columns > (positions - self._window).unsqueeze(1))
            mask = {"full_attention": mask, "sliding_attention": self._mask(local)}
        input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions.unsqueeze(1),
                         **{self._cache_kw: _SlotView(batch, positions, seen)}, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs(adapters))
        batch.advance()
        return out.logits[:, -1]
