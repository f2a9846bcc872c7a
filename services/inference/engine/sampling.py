"""Next-token choice for a batch where every row has its own temperature, top-p and generator.

Everything runs on the logits' device (a GPU's vocabulary of ~152k entries a row is not copied to the
host to be sorted there); the chosen ids cross to the host once per step, for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .types import SamplingParams

# Temperatures this close to 0 pick the most likely token anyway; treated as greedy (0).
MIN_TEMPERATURE = 1e-4


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def penalize(logits: torch.Tensor, counts: dict[int, int], frequency: float, presence: float) -> torch.Tensor:
    """logits[t] -= frequency * count(t) + presence * (count(t) > 0), for the tokens generated so far."""
    if not counts or (frequency == 0.0 and presence == 0.0):
        return logits
    ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
    seen = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
    out = logits.clone()
    out[ids] -= frequency * seen + presence
    return out


def _choose(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One row of last-position logits -> a 0-dim token id tensor on the same device."""
    if temperature < MIN_TEMPERATURE:  # below it, logits / temperature overflow to inf and NaN probabilities
        return torch.argmax(logits)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_idx = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = cumulative - sorted_probs < top_p
        keep[0] = True  # a top_p too small for float32 (it rounds to 0) would otherwise keep nothing
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return sorted_idx[choice[0]]
    return torch.multinomial(probs, 1, generator=generator)[0]


def choose_tokens(logits: Sequence[torch.Tensor], params: Sequence[SamplingParams],
                  generators: Sequence[torch.Generator]) -> list[int]:
    """Each row's next token; rows are independent (a row's choice never depends on the batch)."""
    chosen = [_choose(row, p.temperature, p.top_p, g) for row, p, g in zip(logits, params, generators, strict=True)]
    return torch.stack(chosen).tolist()


def sample_row(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One row of last-position logits -> a token id. Temperature 0 is greedy."""
    return int(_choose(logits, temperature, top_p, generator))
