"""Reciprocal rank fusion: one candidate list out of the ranked lists of the retrieval arms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..repositories.chunks import AnnHit

# The constant of Cormack et al. (2009): a list's first places differ, but no single rank dominates.
DEFAULT_RRF_K = 60


@dataclass
class Fused:
    hit: AnnHit
    score: float = 0.0  # sum over the arms of weight / (rrf_k + rank)
    ranks: dict[str, int] = field(default_factory=dict)  # arm name -> 1-based rank in that arm


def reciprocal_rank_fusion(arms: Sequence[tuple[str, Sequence[AnnHit], float]], *, rrf_k: int = DEFAULT_RRF_K,
                           limit: int | None = None) -> list[Fused]:
    """Candidates of every (name, hits best first, weight) arm, best fused score first, at most `limit`.

    RRF uses ranks only, so a full-text rank and a cosine never need a common scale. A chunk found by
    both arms adds both terms; ties keep the order of first appearance (arms in the order given).
    """
    by_chunk: dict[int, Fused] = {}
    for name, hits, weight in arms:
        if weight <= 0:
            continue
        for rank, hit in enumerate(hits, start=1):
            entry = by_chunk.get(hit.chunk_id)
            if entry is None:
                entry = by_chunk[hit.chunk_id] = Fused(hit)
            entry.score += weight / (rrf_k + rank)
            entry.ranks[name] = rank
    fused = sorted(by_chunk.values(), key=lambda f: -f.score)  # stable: ties keep first appearance
    return fused[:limit] if limit is not None else fused
