"""Citation marks checked against the passages while an answer streams.

A small model cites by position more than by content: retrieval ranks the answer's passage first, so
"[1]" is its habit whatever it read. Each mark is judged when it closes, against the sentence it ends
(support.py's measure at the answer path's threshold, a passage's title naming the subject for it):
numbers whose passage backs that sentence stay;
when none does but another passage does, the mark names that passage; a number that names no passage
the model was given is dropped. A mark after words that claim nothing beyond the question, or that
no passage backs, stays as written: the whole answer's support check judges those.

`misattributed` counts marks, as written, whose passage shares no claimed word or number with their
sentence: what a user following one would find nothing of (the gate's wrong-citation rate).

Only a mark is held back while it streams (a few characters), so tokens still reach the client as
they come.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .support import Backing, Evidence, split_sentences

# A mark with the spaces before it (a dropped mark takes them along: "a lot [9]." -> "a lot.").
_MARK = re.compile(r"(\s*)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_PARTIAL_MARK = re.compile(r"\s*(?:\[[\d,\s]{0,15})?")  # what may still close as a mark
_TRAILING_SPACE = re.compile(r"\s*$")


def cited_numbers(text: str) -> set[int]:
    """The passage numbers a text's marks name ("[2]", "[1, 3]")."""
    return {int(n) for mark in _MARK.finditer(text) for n in mark.group(2).split(",")}


class CitationCheck:
    """Feed it an answer's text as it streams; it returns what may be sent now, marks corrected."""

    def __init__(self, evidence: Sequence[Evidence], question: str, threshold: float) -> None:
        self._backing = Backing(evidence, question, titles=True)  # which passage a sentence comes from
        self._numbers = {e.n for e in evidence}
        self._threshold = threshold
        self._said = ""  # the text let through so far: a mark is judged against its last sentence
        self._held = ""
        self.corrected = 0  # marks renumbered or dropped
        # Marks, as written, naming a passage that shares nothing with the claim they end, or no passage given.
        self.misattributed = 0

    def feed(self, text: str) -> str:
        self._held += text
        sent = len(self._said)
        while self._held:
            start = self._held.find("[")
            if start < 0:  # trailing spaces wait: a mark may follow them
                start = len(self._held)
            start = _TRAILING_SPACE.search(self._held, 0, start).start()
            self._said += self._held[:start]
            rest = self._held[start:]
            mark = _MARK.match(rest)
            if mark:
                numbers = [int(n) for n in mark.group(2).split(",")]
                written = self._judge(mark.group(0)[len(mark.group(1)):], numbers)
                self._said += mark.group(1) + written if written else ""
                self._held = rest[mark.end():]
            elif _PARTIAL_MARK.fullmatch(rest):
                self._held = rest  # may still close as a mark: wait for the next piece
                break
            else:
                bracket = rest.index("[") + 1
                self._said += rest[:bracket]
                self._held = rest[bracket:]
        return self._said[sent:]

    def flush(self) -> str:
        """What is still held when the answer ends (an unclosed "[" is text)."""
        text, self._held = self._held, ""
        self._said += text
        return text

    def _judge(self, mark: str, cited: list[int]) -> str:
        sentences = split_sentences(self._said, clauses=True)
        found = self._backing.sentence(sentences[-1]) if sentences else None
        given = [n for n in cited if n in self._numbers]
        if found is None or found.claim_weight == 0:
            self.misattributed += len(given) < len(cited)
            return self._written(mark, cited, given)
        # Shares nothing at all: the subject rule is left out here, since a passage often names its subject
        # only in its title, which the model is not shown.
        self.misattributed += any(n not in found.touched for n in cited)
        backers = [n for n in given if found.by_passage.get(n, 0.0) >= self._threshold]
        if backers:
            return self._written(mark, cited, backers)
        best_n, best_score = found.best()
        if best_n is not None and best_score >= self._threshold:
            self.corrected += 1
            return f"[{best_n}]"
        return self._written(mark, cited, given)

    def _written(self, mark: str, cited: list[int], kept: list[int]) -> str:
        if kept == cited:
            return mark
        self.corrected += 1
        return "[" + ", ".join(str(n) for n in kept) + "]" if kept else ""


def check_citations(text: str, evidence: Sequence[Evidence], question: str, threshold: float) -> str:
    """A whole answer's citation marks corrected, as the answer path serves them."""
    check = CitationCheck(evidence, question, threshold)
    return check.feed(text) + check.flush()
