"""Plain data passed between the HTTP layer and the engine thread."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

_ids = itertools.count(1)


class FinishReason(StrEnum):
    STOP = "stop"          # end-of-sequence token or a stop sequence
    LENGTH = "length"      # max_new_tokens (or the context) reached
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0   # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # OpenAI's penalties, on the tokens this request has generated so far (never on the prompt: a RAG
    # answer should quote its context freely). They break the loops small models fall into.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False  # go on past end-of-sequence tokens (benchmarks, as vLLM's ignore_eos)


class TokenConstraint(Protocol):
    """Limits which tokens one row may take next (engine/constraints.py: a grammar)."""

    def mask(self, logits: torch.Tensor) -> torch.Tensor: ...

    def advance(self, token: int) -> bool: ...  # True once the output is complete


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None   # a loaded adapter's versioned name, or None for the base weights
    constraint: TokenConstraint | None = None   # this row's grammar (tools, response_format); None: free text
    weights_version: int = 0     # the engine's weights version the adapter was resolved against
    request_id: int = field(default_factory=lambda: next(_ids))


@dataclass
class StreamEvent:
    """One event for one request: a text delta, or the end of the sequence."""

    text: str = ""
    finished: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_status: int | None = None  # the HTTP status the error deserves (500 unless the engine knows better)
    first_token_s: float | None = None
