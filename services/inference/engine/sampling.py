"""Next-token choice for a batch where every row has its own temperature, top-p and generator."""

from __future__ import annotations

import torch

# Temperatures this close to 0 pick the most likely token anyway; treated as greedy (0).
MIN_TEMPERATURE = 1e-4


def make_generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator(device="cpu")
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


def sample_row(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One row of last-position logits → a token id. Temperature 0 is greedy."""
    if temperature < MIN_TEMPERATURE:  # below it, logits / temperature overflow to inf and NaN probabilities
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    if top_p < 1.0:
        sorted_probs, sorted_idx = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = cumulative - sorted_probs < top_p
        keep[0] = True  # a top_p too small for float32 (it rounds to 0) would otherwise keep nothing
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(sorted_idx[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())
