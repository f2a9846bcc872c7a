"""The running batch: one KV cache for all live sequences, left-padded to a common length."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    """Prepend n zero positions on the sequence axis (dim -2 for keys/values, -1 for masks)."""
    if n == 0:
        return t
    if t.dim() == 2:
        return torch.cat([t.new_zeros(t.shape[0], n), t], dim=1)
    shape = list(t.shape)
    shape[-2] = n
    return torch.cat([t.new_zeros(shape), t], dim=-2)


class BatchCache:
    """Keys/values of every layer for every running row, plus the padding mask.

    Rows join after their own prefill (no padding inside a prompt) and leave when finished; the
    columns that became padding for every row are trimmed so the cache never grows without need.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.mask: torch.Tensor | None = None  # (rows, columns) 1 where a real token sits

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def as_cache(self) -> DynamicCache:
        return DynamicCache(ddp_cache_data=self.layers, config=self.config)

    def absorb(self, cache: DynamicCache) -> None:
        """Take back the grown cache after a forward pass."""
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def append_row(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Add one freshly prefilled sequence (batch of one, no padding)."""
        row_mask = torch.ones(1, length, dtype=torch.long, device=layers[0][0].device)
        if self.mask is None:
            self.layers, self.mask = list(layers), row_mask
            return
        width = max(self.columns, length)
        grow_old, grow_new = width - self.columns, width - length
        self.layers = [
            (torch.cat([_pad_left(k, grow_old), _pad_left(nk, grow_new)], dim=0),
             torch.cat([_pad_left(v, grow_old), _pad_left(nv, grow_new)], dim=0))
            for (k, v), (nk, nv) in zip(self.layers, layers, strict=True)
        ]
        self.mask = torch.cat([_pad_left(self.mask, grow_old), _pad_left(row_mask, grow_new)], dim=0)

    def extend_mask(self) -> torch.Tensor:
        """One more real column for every row (the token being decoded now)."""
        assert self.mask is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        return self.mask

    def remove_rows(self, dead: list[int]) -> list[int]:
        """Drop rows, keeping the others in order. Returns, for each new row, its old index."""
        gone = set(dead)
        keep = [row for row in range(self.rows) if row not in gone]
        self.keep_rows(keep)
        return keep

    def keep_rows(self, keep: list[int]) -> None:
        if not keep:
            self.layers, self.mask = [], None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)  # type: ignore[union-attr]
        self.layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers]
        self.mask = self.mask.index_select(0, index)  # type: ignore[union-attr]
        self._trim()

    def _trim(self) -> None:
        """Drop leading columns that are padding in every remaining row."""
        assert self.mask is not None
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0].item()) if used.numel() else self.columns
        if first > 0:
            self.layers = [(k[..., first:, :].contiguous(), v[..., first:, :].contiguous()) for k, v in self.layers]
            self.mask = self.mask[:, first:].contiguous()

    def positions(self) -> torch.Tensor:
        """Position id of the next token of each row = number of real tokens it already has."""
        assert self.mask is not None
        return self.mask.sum(dim=1, keepdim=True)
