"""Grammar-constrained decoding for one row of the batch (llguidance).

A request that carries a constraint has its row's logits masked before sampling (tokens the grammar
cannot take next get -inf; EOS only where the grammar may end), and the matcher is advanced with the
token that was chosen. Other rows of the batch are untouched. docs/benchmarks.md says why llguidance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


class GrammarError(ValueError):
    """The grammar (a JSON schema, a tool's parameters) cannot be compiled; the message says why."""


class GrammarConstraint:
    """One request's matcher: which tokens may come next, and whether the grammar is complete."""

    def __init__(self, matcher: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._eos_ids = eos_ids
        self.failed: str | None = None

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """The row's logits with every token the grammar forbids next set to -inf."""
        width = logits.shape[-1]
        allowed = self._allowed(width)
        if not allowed.any():  # a matcher error: end the row cleanly rather than sample from nothing
            self.failed = self.failed or self._matcher.get_error() or "no token fits the grammar"
            logger.warning("constrained decoding stopped: %s", self.failed)
            allowed[[t for t in self._eos_ids if t < width]] = True
        if logits.device.type != "cpu":  # the mask goes to the device, the logits stay there
            return logits.masked_fill(~torch.from_numpy(allowed).to(logits.device), float("-inf"))
        # numpy, single-threaded: torch's small element-wise ops on a busy CPU wait for their thread pool
        # (a 49k-entry masked_fill took 8-50 ms here with 2 threads, 0.2 ms in numpy)
        row = logits.detach().float().numpy()
        return torch.from_numpy(np.where(allowed, row, np.float32(-np.inf)))

    def _allowed(self, width: int) -> np.ndarray:
        allowed = np.zeros(width, dtype=np.bool_)
        if not self._matcher.is_error():
            bits = np.unpackbits(np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            n = min(width, self._vocab_size, bits.shape[0])
            allowed[:n] = bits[:n]
        return allowed

    def advance(self, token: int) -> bool:
        """Take the sampled token; True when the grammar is complete (nothing but EOS may follow)."""
        if token in self._eos_ids:
            return True
        if not self._matcher.consume_token(token):
            self.failed = self.failed or self._matcher.get_error()
            return True
        return self._matcher.is_stopped()


class GrammarCompiler:
    """Compiles Lark grammars (with embedded JSON schemas) for one tokenizer.

    Built once per model: converting the vocabulary takes about a second; a grammar then compiles
    lazily, in well under a millisecond for a typical schema, so every request can bring its own.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int]) -> None:
        import llguidance
        import llguidance.hf

        self._ll = llguidance
        self.vocab_size = vocab_size
        self.eos_ids = tuple(sorted(eos_ids))
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(self.eos_ids))

    def constraint(self, lark: str) -> GrammarConstraint:
        """A fresh matcher for one request (each row advances its own); GrammarError when it cannot compile."""
        matcher = self._ll.LLMatcher(self._tokenizer, self._ll.LLMatcher.grammar_from_lark(lark), log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return GrammarConstraint(matcher, self.vocab_size, self.eos_ids)
