"""Maximal Marginal Relevance (the seed's `mmrSelect`): relevant passages that do not repeat each other."""

from __future__ import annotations

import numpy as np

# Cosine at or above which two passages count as the same text. Measured with MiniLM on real docs:
# reworded copies of one paragraph score 0.95-0.98, while neighbouring overlapping chunks of one
# section peak at ~0.91, so 0.93 separates them.
DEFAULT_DUPLICATE_SIMILARITY = 0.93


def mmr_select(query_vector: np.ndarray, candidate_vectors: np.ndarray, k: int, lam: float = 0.7,
               relevance: np.ndarray | None = None,
               duplicate_similarity: float | None = DEFAULT_DUPLICATE_SIMILARITY) -> list[int]:
    """Indices of up to `k` candidates in selection order.

    Each step takes argmax of  lam * sim(q, c) - (1 - lam) * max(sim(c, s) for s already chosen);
    lam = 1 is top-k by relevance, lam = 0 pure diversity. On its own that penalty does not stop a
    near-copy of a chosen passage from winning when the other candidates are much less relevant
    (at lam 0.7 a copy loses only 0.3 * ~0.97), so candidates with sim >= `duplicate_similarity`
    to a chosen passage are skipped outright; fewer than k may come back. Similarities are cosines;
    `relevance` (the ANN scores) may be passed to skip recomputing sim(q, c).
    """
    n = len(candidate_vectors)
    if n == 0 or k <= 0:
        return []
    cands = _normalize(np.asarray(candidate_vectors, dtype=np.float32))
    if relevance is None:
        relevance = cands @ _normalize(np.asarray(query_vector, dtype=np.float32).reshape(1, -1))[0]
    relevance = np.asarray(relevance, dtype=np.float64)
    pairwise = (cands @ cands.T).astype(np.float64)

    chosen: list[int] = []
    redundancy = np.zeros(n)  # max similarity to anything chosen so far (0 before the first pick)
    available = np.ones(n, dtype=bool)
    while len(chosen) < k and available.any():
        scores = lam * relevance - (1.0 - lam) * redundancy
        scores[~available] = -np.inf
        best = int(np.argmax(scores))
        chosen.append(best)
        available[best] = False
        redundancy = pairwise[best] if len(chosen) == 1 else np.maximum(redundancy, pairwise[best])
        if duplicate_similarity is not None:
            available &= pairwise[best] < duplicate_similarity
    return chosen


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)
