"""What a fallback call costs: a per-model price table, and token estimates when usage is missing."""

from __future__ import annotations

import math
from dataclasses import dataclass

# USD per million tokens (input, output); overridable with AION_FALLBACK_PRICES.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


@dataclass(frozen=True)
class Price:
    input_per_m: float
    output_per_m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m) / 1_000_000


def price_for(model: str, table: dict[str, tuple[float, float]], unknown: tuple[float, float]) -> Price:
    """Exact name first, then the longest known prefix (dated model names), else the conservative default."""
    if model in table:
        return Price(*table[model])
    prefixes = [name for name in table if model.startswith(name)]
    if prefixes:
        return Price(*table[max(prefixes, key=len)])
    return Price(*unknown)


def estimate_tokens(text: str) -> int:
    """Over-estimates on purpose (~3 characters per token) so a missing usage block never under-bills."""
    return max(1, math.ceil(len(text) / 3))


def estimate_messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m.get("content") or "") + 4 for m in messages) + 2
