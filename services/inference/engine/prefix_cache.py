"""Keys and values of prompt prefixes already computed, reused by later prompts that start the same way.

Every chat request starts with the same system prompt, and a conversation's next turn starts with the
whole previous exchange; recomputing those positions is most of a prompt's time. Prompts are cut into
blocks of `BLOCK` tokens and every full block's keys and values are kept, keyed by a hash chained over
all tokens up to the block's end (so a block is found only after the same whole prefix) and by the
weights that computed it (the adapter name: names are never reused for other weights; base-weight
changes clear the cache). A prompt reuses its longest run of cached leading blocks, and always
computes at least its last token (the first new token needs its logits).

Exact reuse: the runner uses the cache only where a prompt's positions come out the same bits whether
the positions before them were computed in the same call or taken from here — the engine's own prompt
pass on the packed CPU kernels, whose rows never depend on each other (MKL's GEMMs do: their blocking
changes with the number of rows), with the kernels' own causal attention, where each query row reads
exactly its own positions in a fixed order (torch's flash attention cuts the queries into blocks by the
prompt's length, and on some CPUs a row's bits change with the block it falls in). The guarantee rests
only on the kernels' code, so it holds on every CPU they run on (AVX-512). So answers never depend on
what was asked before, and batched = solo holds with or without hits. It also means rows whose prompts
share leading blocks hold identical keys and values there, which decode uses (SlotCache.sharing).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

BLOCK = 16  # tokens per cached block (a prompt reuses whole blocks)

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, kv heads, positions, head dim)


@dataclass(frozen=True)
class PrefixStats:
    blocks: int
    bytes: int
    capacity_bytes: int
    hit_tokens: int
    prompt_tokens: int


def block_keys(adapter: str | None, prompt_ids: list[int], blocks: int) -> list[bytes]:
    """The chained key of each of the first `blocks` full blocks."""
    keys = []
    digest = hashlib.blake2b((adapter or "").encode(), digest_size=16).digest()
    for b in range(blocks):
        chunk = prompt_ids[b * BLOCK:(b + 1) * BLOCK]
        digest = hashlib.blake2b(digest + b"".join(t.to_bytes(4, "little") for t in chunk), digest_size=16).digest()
        keys.append(digest)
    return keys


def reusable_blocks(length: int) -> int:
    """Full blocks a prompt of `length` tokens may take from the cache: its last token is always computed."""
    return max(length - 1, 0) // BLOCK


class PrefixCache:
    """A least-recently-used store of prompt blocks' keys and values, bounded in bytes. Thread-safe; the
    engine thread is its only user today."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._blocks: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # key -> (layers, 2, kvh, BLOCK, dim)
        self._bytes = 0
        self._hit_tokens = self._prompt_tokens = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._bytes = 0

    def lookup(self, adapter: str | None, prompt_ids: list[int]) -> tuple[int, Layers | None]:
        """The number of leading prompt tokens found, and their keys and values per layer (None if none)."""
        with self._lock:
            self._prompt_tokens += len(prompt_ids)
            if not self.enabled:
                return 0, None
            keys = block_keys(adapter, prompt_ids, reusable_blocks(len(prompt_ids)))
            found: list[torch.Tensor] = []
            for key in keys:
                block = self._blocks.get(key)
                if block is None:
                    break
                found.append(block)
            if not found:
                return 0, None
            self._touch(keys[:len(found)])
            self._hit_tokens += len(found) * BLOCK
        joined = torch.cat(found, dim=3) if len(found) > 1 else found[0]
        return len(found) * BLOCK, [(joined[layer, 0].unsqueeze(0), joined[layer, 1].unsqueeze(0))
                                    for layer in range(joined.shape[0])]

    def store(self, adapter: str | None, prompt_ids: list[int], layers: Layers) -> None:
        """Keep every full block of a computed prompt that is not kept yet (evicting the least recently used)."""
        if not self.enabled:
            return
        full = len(prompt_ids) // BLOCK
        keys = block_keys(adapter, prompt_ids, full)
        with self._lock:
            for b, key in enumerate(keys):
                if key in self._blocks:
                    continue
                block = torch.stack([torch.stack((k[0, :, b * BLOCK:(b + 1) * BLOCK], v[0, :, b * BLOCK:(b + 1) * BLOCK]))
                                     for k, v in layers])
                size = block.numel() * block.element_size()
                if size > self.capacity_bytes:
                    return
                while self._bytes + size > self.capacity_bytes:
                    _, evicted = self._blocks.popitem(last=False)
                    self._bytes -= evicted.numel() * evicted.element_size()
                self._blocks[key] = block
                self._bytes += size
            self._touch(keys)

    def _touch(self, keys: list[bytes]) -> None:
        # A chain's first block is marked used last, so eviction takes chains from their ends: a block
        # is only ever found after all the blocks before it.
        for key in reversed(keys):
            if key in self._blocks:
                self._blocks.move_to_end(key)

    def stats(self) -> PrefixStats:
        with self._lock:
            return PrefixStats(blocks=len(self._blocks), bytes=self._bytes, capacity_bytes=self.capacity_bytes,
                               hit_tokens=self._hit_tokens, prompt_tokens=self._prompt_tokens)
