"""MMR selection and the confidence formula on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.services.confidence import confidence
from services.gateway.services.mmr import mmr_select


def _unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_lambda_one_is_plain_top_k_by_relevance():
    q = _unit(1, 0, 0)
    cands = np.vstack([_unit(0.2, 1, 0), _unit(1, 0.1, 0), _unit(1, 0.3, 0), _unit(0, 0, 1)])
    assert mmr_select(q, cands, 3, lam=1.0, duplicate_similarity=None) == [1, 2, 0]


def test_diversity_beats_a_redundant_second_pick():
    q = _unit(1, 0, 0)
    a = _unit(1, 0.05, 0)        # most relevant
    a2 = _unit(1, 0.08, 0.02)    # nearly a copy of a, slightly less relevant
    b = _unit(0.8, 0, 0.6)       # less relevant, different content
    cands = np.vstack([a, a2, b])
    assert mmr_select(q, cands, 2, lam=1.0, duplicate_similarity=None) == [0, 1]
    assert mmr_select(q, cands, 2, lam=0.5, duplicate_similarity=None) == [0, 2]


def test_near_copies_are_skipped_even_when_much_more_relevant_than_the_rest():
    q = _unit(1, 0, 0)
    a, a2 = _unit(1, 0.05, 0), _unit(1, 0.06, 0.01)
    far = _unit(0.3, 1, 0)
    cands = np.vstack([a, a2, far])
    # Plain MMR at 0.7 keeps the copy: 0.7*~1 - 0.3*~1 > 0.7*0.29 - 0.3*~0.33.
    assert mmr_select(q, cands, 2, lam=0.7, duplicate_similarity=None) == [0, 1]
    assert mmr_select(q, cands, 2, lam=0.7) == [0, 2]
    # With only copies left, fewer than k come back rather than a duplicate.
    assert mmr_select(q, np.vstack([a, a2]), 2, lam=0.7) == [0]


def test_relevance_scores_may_be_passed_in_and_empty_input():
    q = _unit(1, 0)
    cands = np.vstack([_unit(1, 0), _unit(0, 1)])
    assert mmr_select(q, cands, 1, relevance=np.array([0.1, 0.9])) == [1]
    assert mmr_select(q, np.zeros((0, 2)), 3) == []


@pytest.mark.parametrize(("scores", "expected"), [
    ([1.0, 1.0], 1.0), ([0.0], 0.5), ([-1.0], 0.0), ([0.5, 0.3], 0.7), ([0.24, 0.5, 0.8], (0.5133333 + 1) / 2),
    ([], 0.0),
])
def test_confidence_formula(scores, expected):
    assert confidence(scores) == pytest.approx(expected, abs=1e-6)
