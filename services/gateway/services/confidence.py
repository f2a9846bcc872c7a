"""Retrieval confidence C (the seed's formula), alone in its module so a better estimator can replace it."""

from __future__ import annotations

from collections.abc import Sequence


def confidence(similarities: Sequence[float]) -> float:
    """C = clamp((mean cosine similarity of the chosen passages + 1) / 2, 0, 1).

    With no passages at all C is 0, not the seed's 0.5 (its mean over max(1, n) of nothing is 0): an
    empty knowledge base is no evidence, and must never look half-confident to the answer router.
    """
    if not similarities:
        return 0.0
    mean = sum(similarities) / len(similarities)
    return max(0.0, min(1.0, (mean + 1.0) / 2.0))
