"""Sampling parameters at the edge of float range (found by the schema sweep): a token, never NaN."""

from __future__ import annotations

import pytest
import torch

from services.inference.engine.sampling import make_generator, sample_row


@pytest.mark.parametrize(("temperature", "top_p"), [
    (1.0, 5e-324),     # rounds to 0 in float32: nothing would pass the top-p cut
    (1.0, 1e-30),
    (5e-324, 0.9),     # logits / temperature overflow to inf
    (1e-30, 1.0),
])
def test_extreme_sampling_parameters_pick_the_most_likely_token(temperature: float, top_p: float) -> None:
    logits = torch.tensor([0.5, 3.0, -1.0, 2.9])
    assert sample_row(logits, temperature, top_p, make_generator(0)) == 1


def test_ordinary_sampling_still_samples() -> None:
    logits = torch.zeros(8)
    picks = {sample_row(logits, 1.0, 1.0, make_generator(seed)) for seed in range(40)}
    assert len(picks) > 3
