"""Training defaults that depend on the base model's size, and how that size is counted.

A learning rate that teaches a 135M model in a few steps wrecks a 7B one; an evaluation batch that
is free for 135M does not fit beside a 7B on a GPU. The rows hold the RAG prompt, so sequence
lengths follow the context the gateway sends rather than the model's maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SizeDefaults:
    label: str
    learning_rate: float
    eval_batch_size: int
    max_seq_len: int


SMALL = SizeDefaults("under 1B parameters", learning_rate=3e-4, eval_batch_size=8, max_seq_len=2048)
MEDIUM = SizeDefaults("1B to 10B parameters", learning_rate=2e-4, eval_batch_size=2, max_seq_len=4096)
LARGE = SizeDefaults("10B parameters or more", learning_rate=1e-4, eval_batch_size=1, max_seq_len=4096)


def defaults_for(parameters: int) -> SizeDefaults:
    if parameters < 1_000_000_000:
        return SMALL
    if parameters < 10_000_000_000:
        return MEDIUM
    return LARGE


def count_parameters(model: Any) -> int:
    """Weights of the model, counting a 4-bit packed tensor by the shape it stands for."""
    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        shape = getattr(state, "shape", None)
        total += shape.numel() if shape is not None else param.numel()
    return total
