"""A preallocated, growable KV cache for the running batch: one slot per row, written in place.

The transformers `DynamicCache` grows by `torch.cat` on every decode step, which copies the whole
cache of every layer once per generated token (and a left-padded batch copies it again whenever a
row joins or leaves). Here each row owns a slot; a decode step writes one position per row in place,
attention reads a view of the first `max(length) + 1` positions, a joining row is copied in once, and a
leaving row is replaced by the last row (one row copied, not the batch). Rows are right-padded: row i
holds `lengths[i]` real positions, the rest is masked out.

Two layouts: position-major (rows, positions, kv heads, head dim) for the native kernels, whose decode
writes one flat row per position; head-major (rows, kv heads, positions, head dim) for the model's own
attention, which reads (rows, kv heads, positions, dim) views without copying them.

A byte budget (`max_bytes`) bounds what the cache may ever allocate: the engine admits a request only
when the rows and positions it would need fit (`fits`), and growth never goes past the budget.
"""

from __future__ import annotations

import torch

from .prefix_cache import BLOCK as PREFIX_BLOCK

_MIN_ROWS = 4
_MIN_LENGTH = 256


def _grow(current: int, need: int, floor: int, ceiling: int) -> int:
    size = max(current, floor)
    while size < need:
        size *= 2
    return max(min(size, ceiling), need)


class SlotCache:
    """Keys and values of every layer for up to `max_rows` sequences, with per-row lengths.

    Every method that allocates or writes runs in inference mode: the cache grows inside the runner's
    decode (inference mode) and takes rows outside it, and an in-place write to a tensor allocated in
    inference mode is refused outside it.

    Layout per layer: (rows, positions, kv heads, head dim), so that the position each row writes
    next is one row of a flat (rows * positions, kv heads * head dim) view.
    """

    def __init__(self, max_rows: int, max_length: int, *, position_bytes: int = 0, max_bytes: int | None = None,
                 heads_first: bool = False) -> None:
        self.max_rows = max_rows
        self.max_length = max_length
        self.position_bytes = position_bytes  # keys + values of one position of one row, all layers
        self.max_bytes = max_bytes
        self.heads_first = heads_first
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []
        self.blocks: list[tuple[bytes, ...]] = []  # per row: its prompt's prefix-cache block keys (see sharing)
        self._sharing: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None | bool = False  # False: not built
        self._spec: tuple[int, int, int, torch.dtype, torch.device] | None = None  # layers, heads, dim, ...

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def row_capacity(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def capacity(self) -> int:
        """Positions each row has room for."""
        return self.keys[0].shape[2 if self.heads_first else 1] if self.keys else 0

    @property
    def allocated_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def fits(self, rows: int, positions: int) -> bool:
        """Whether `rows` rows of `positions` positions stay within the byte budget."""
        return self.max_bytes is None or rows * positions * self.position_bytes <= self.max_bytes

    def _span(self, cache: torch.Tensor, row: int, n: int) -> torch.Tensor:
        """Row `row`'s first n positions, in this layout."""
        return cache[row, :, :n] if self.heads_first else cache[row, :n]

    @torch.inference_mode()
    def _reserve(self, rows: int, length: int) -> None:
        """Room for `rows` rows of `length` positions; grows geometrically, copying once, when short."""
        if length > self.max_length:
            raise ValueError(f"a sequence of {length} positions exceeds the context of {self.max_length}")
        if self.keys and rows <= self.row_capacity and length <= self.capacity:
            return
        if not self.fits(rows, length):
            raise MemoryError(f"{rows} rows of {length} positions need {rows * length * self.position_bytes >> 20} MB "
                              f"of KV cache; the budget is {(self.max_bytes or 0) >> 20} MB (AION_KV_CACHE_MB)")
        assert self._spec is not None
        layers, heads, dim, dtype, device = self._spec
        row_count = _grow(self.row_capacity, rows, _MIN_ROWS, self.max_rows)
        positions = _grow(self.capacity, length, _MIN_LENGTH, self.max_length)
        if not self.fits(row_count, positions):  # geometric growth past the budget: only what is needed
            row_count = max(rows, min(row_count, (self.max_bytes or 0) // max(positions * self.position_bytes, 1)))
            if not self.fits(row_count, positions):
                positions = max(length, (self.max_bytes or 0) // (row_count * self.position_bytes))
        shape = (row_count, heads, positions, dim) if self.heads_first else (row_count, positions, heads, dim)
        # zeros, not empty: masked positions still meet the attention kernels, so they must be finite
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        if self.keys and self.lengths:
            n, t = self.rows, max(self.lengths)
            for new, old in zip(keys + values, self.keys + self.values, strict=True):
                if self.heads_first:
                    new[:n, :, :t].copy_(old[:n, :, :t])
                else:
                    new[:n, :t].copy_(old[:n, :t])
        self.keys, self.values = keys, values

    @torch.inference_mode()
    def append_row(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int,
                   blocks: tuple[bytes, ...] = ()) -> None:
        """Copy one freshly prefilled sequence (batch of one, (1, heads, length, dim)) into the next slot.
        `blocks`: the prefix-cache keys of its prompt's full blocks when its keys and values there are the
        cache's bits (the runner says), so that rows sharing them may read them from one slot."""
        k0 = layers[0][0]
        self._spec = (len(layers), k0.shape[1], k0.shape[3], k0.dtype, k0.device)
        self._reserve(self.rows + 1, length + 1)  # + the position the next decode step writes
        row = self.rows
        for (k, v), ck, cv in zip(layers, self.keys, self.values, strict=True):
            self._span(ck, row, length).copy_(k[0] if self.heads_first else k[0].transpose(0, 1))
            self._span(cv, row, length).copy_(v[0] if self.heads_first else v[0].transpose(0, 1))
        self.lengths.append(length)
        self.blocks.append(tuple(blocks))
        self._sharing = False

    @torch.inference_mode()
    def remove_rows(self, dead: list[int]) -> list[int]:
        """Drop rows; the last live rows move into the holes. Returns, for each new row, its old index."""
        order = list(range(self.rows))
        for row in sorted(dead, reverse=True):
            last = len(order) - 1
            if row != last:
                n = self.lengths[last]
                for cache in self.keys + self.values:
                    self._span(cache, row, n).copy_(self._span(cache, last, n))
                self.lengths[row] = n
                self.blocks[row] = self.blocks[last]
                order[row] = order[last]
            order.pop()
            self.lengths.pop()
            self.blocks.pop()
        self._sharing = False
        if not self.lengths and self.capacity > 4 * _MIN_LENGTH:
            self.keys, self.values = [], []  # one long request must not pin its memory for good
        return order

    def sharing(self, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """For the attention kernel: (task order, leader, shared positions) when some rows begin with the
        same blocks, else None. A row's leader is the first row with the same first block; they share the
        blocks both prompts have in common. Tasks (row * kv_heads + head) run group by group, head by head,
        so one thread reads a group's shared positions for one head while they are in its cache."""
        if self._sharing is False:
            self._sharing = self._build_sharing(kv_heads)
        return self._sharing  # type: ignore[return-value]

    def _build_sharing(self, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        first: dict[bytes, int] = {}
        leader, shared = list(range(self.rows)), [0] * self.rows
        for row, keys in enumerate(self.blocks):
            if not keys:
                continue
            lead = first.setdefault(keys[0], row)
            if lead == row:
                continue
            common = 0
            for mine, theirs in zip(keys, self.blocks[lead], strict=False):
                if mine != theirs:
                    break
                common += 1
            leader[row], shared[row] = lead, common * PREFIX_BLOCK
        if not any(shared):
            return None
        groups: dict[int, list[int]] = {}
        for row, lead in enumerate(leader):
            groups.setdefault(lead, []).append(row)
        tasks = [row * kv_heads + head for rows in groups.values() for head in range(kv_heads) for row in rows]
        return (torch.tensor(tasks, dtype=torch.int64), torch.tensor(leader, dtype=torch.int64),
                torch.tensor(shared, dtype=torch.int64))

    def reserve_step(self) -> None:
        """Room for the position that the next decode step writes in every row."""
        self._reserve(self.rows, max(self.lengths) + 1)

    def advance(self) -> None:
        """Every row now holds the position the decode step just wrote."""
        self.lengths = [n + 1 for n in self.lengths]
