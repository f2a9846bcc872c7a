"""A grounded row with its passages in another order and the reply's citations renumbered to match.

Retrieval ranks the passage that holds the answer first, so the owner's rows nearly always cite [1];
an adapter trained on them learns to cite [1] whatever the passages say (docs/benchmarks.md, the
learning loop). Training each row with its passages in a seeded random order teaches it to cite the
passage that holds the answer. Only rows whose system message is exactly the gateway's layout
(`prompt.system_message`) are reordered; anything else is trained as it was logged.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from services.gateway.services.prompt import PROMPT_VERSION, PromptPassage, build_context

# "[2]" or "[1, 3]": the citation forms the prompt asks for and replies use.
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_PASSAGE_START = re.compile(r"\n\n\[\d+\] ")
# A passage named in words ("document 2", "passagem 3") cannot be renumbered safely.
_NUMBER_IN_WORDS = re.compile(r"\b(?:document|documento|passage|passagem|source|fonte)s?\s*#?\d", re.IGNORECASE)


def split_context(system: str) -> tuple[str, list[str]] | None:
    """(the text before the passages, the passages' texts in order), or None when `system` is not the
    gateway's layout: the head, a blank line, then "[1] text", "[2] text", … separated by blank lines."""
    start = system.find("\n\n[1] ")
    if start < 0:
        return None
    head, context = system[:start + 2], system[start + 2:]
    texts: list[str] = []
    rest = context[len("[1] "):]
    while True:
        marker = f"\n\n[{len(texts) + 2}] "
        cut = rest.find(marker)
        if cut < 0:
            texts.append(rest)
            break
        texts.append(rest[:cut])
        rest = rest[cut + len(marker):]
    if head + _context(texts) != system or any(_PASSAGE_START.search(text) for text in texts):
        return None  # surrounding blanks or numbering out of order: where a passage ends is not certain
    return head, texts


def _context(texts: Sequence[str]) -> str:
    return build_context([PromptPassage(n=i + 1, text=text, source="") for i, text in enumerate(texts)])


def renumber_citations(reply: str, new_number: Sequence[int]) -> str | None:
    """`reply` with each cited passage n (1-based) replaced by new_number[n - 1]; None when it cites a
    number that is not a passage or names one in words."""
    if _NUMBER_IN_WORDS.search(reply):
        return None
    bad = False

    def swap(match: re.Match[str]) -> str:
        nonlocal bad
        numbers = [int(part) for part in match.group(1).split(",")]
        if not all(1 <= n <= len(new_number) for n in numbers):
            bad = True
            return match.group(0)
        return "[" + ", ".join(str(new_number[n - 1]) for n in numbers) + "]"

    renumbered = _CITATION.sub(swap, reply)
    return None if bad else renumbered


def reorder_passages(messages: list[dict[str, str]], meta: object, seed: int) -> list[dict[str, str]] | None:
    """The row with its passages in a random order fixed by `seed`, or None when it cannot be reordered
    safely (another prompt version or layout, fewer than two passages, a citation that is not a passage,
    or a passage count that differs from the chunks the answer event logged)."""
    if not isinstance(meta, dict) or meta.get("prompt_version") != PROMPT_VERSION:
        return None
    if not messages or messages[0]["role"] != "system" or messages[-1]["role"] != "assistant":
        return None
    parsed = split_context(messages[0]["content"])
    if parsed is None:
        return None
    head, texts = parsed
    chunk_ids = meta.get("chunk_ids")
    if len(texts) < 2 or (isinstance(chunk_ids, list) and len(chunk_ids) != len(texts)):
        return None
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)  # order[k]: the old index of the passage now at k
    new_number = [0] * len(texts)
    for position, old in enumerate(order):
        new_number[old] = position + 1
    reply = renumber_citations(messages[-1]["content"], new_number)
    if reply is None:
        return None
    system = head + _context([texts[old] for old in order])
    return [{"role": "system", "content": system}, *messages[1:-1], {"role": "assistant", "content": reply}]
