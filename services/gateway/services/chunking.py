"""Structure-aware chunking: sections by heading (and PDF page), paragraphs kept whole when they fit,
sentences (or lines, for lists/tables/code) as the unit of packing, sizes and overlap in model tokens.

A chunk never crosses a heading or a page, so each one cites a single heading path or page. The text
the model embeds is the heading path plus the passage, so a passage that never repeats its section's
name is still found by it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .extract import Block
from .tokens import TokenCounter

HEADING_SEPARATOR = " > "
# Heading paths are capped so that passage + heading stays under the model's 256-token window
# at the default chunk size (200 + 48 + 2 special tokens).
HEADING_TOKEN_BUDGET = 48

_SENTENCE_END = re.compile(r"(?<=[.!?…;])[\"'”’)\]]*\s+(?=[\"'“‘(\[¿¡]?[A-ZÀ-ÖØ-Þ0-9])")
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


@dataclass(frozen=True)
class ChunkDraft:
    ord: int
    text: str
    heading: str | None
    page: int | None
    token_count: int

    @property
    def embed_text(self) -> str:
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass
class _Unit:
    text: str
    paragraph: int  # index of its paragraph within the section
    joiner: str  # how it attaches to the previous unit of the same paragraph
    tokens: int = 0


@dataclass
class _Section:
    heading: str | None
    page: int | None
    units: list[_Unit]


def split_sentences(text: str) -> list[str]:
    """Sentences of a prose paragraph (line-wrapped text is unwrapped first)."""
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = re.sub(r"\s*\n\s*", " ", text).strip()
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _sections(blocks: Sequence[Block]) -> list[_Section]:
    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []
    current: _Section | None = None
    for block in blocks:
        if block.kind == "heading":
            stack = [(lvl, txt) for lvl, txt in stack if lvl < block.level] + [(block.level, block.text.strip())]
            current = None
            continue
        heading = HEADING_SEPARATOR.join(t for _, t in stack) or None
        if current is None or current.page != block.page or current.heading != heading:
            current = _Section(heading, block.page, [])
            sections.append(current)
        paragraph = (current.units[-1].paragraph + 1) if current.units else 0
        if block.kind == "lines":
            pieces, joiner = [ln.rstrip() for ln in block.text.split("\n") if ln.strip()], "\n"
        else:
            pieces, joiner = split_sentences(block.text), " "
        current.units.extend(_Unit(p, paragraph, joiner) for p in pieces)
    return sections


def _split_long(unit: _Unit, counter: TokenCounter, budget: int) -> list[_Unit]:
    """A unit over budget becomes word runs that fit (and character runs for a giant 'word')."""
    words = unit.text.split(" ")
    counts = counter.count(words)
    pieces: list[_Unit] = []
    run: list[str] = []
    run_tokens = 0
    for word, n in zip(words, counts, strict=True):
        if n > budget:
            if run:
                pieces.append(_Unit(" ".join(run), unit.paragraph, " ", run_tokens))
                run, run_tokens = [], 0
            step = max(1, len(word) * budget // (n + 1))
            for i in range(0, len(word), step):
                part = word[i:i + step]
                pieces.append(_Unit(part, unit.paragraph, unit.joiner, counter.count([part])[0]))
            continue
        if run and run_tokens + n > budget:
            pieces.append(_Unit(" ".join(run), unit.paragraph, " ", run_tokens))
            run, run_tokens = [], 0
        run.append(word)
        run_tokens += n
    if run:
        pieces.append(_Unit(" ".join(run), unit.paragraph, " ", run_tokens))
    if pieces:
        pieces[0].joiner = unit.joiner
    return pieces


def _heading_text(heading: str | None, counter: TokenCounter) -> tuple[str | None, int]:
    if not heading:
        return None, 0
    parts = heading.split(HEADING_SEPARATOR)
    while True:
        text = HEADING_SEPARATOR.join(parts)
        tokens = counter.count([text])[0]
        if tokens <= HEADING_TOKEN_BUDGET or len(parts) == 1:
            break
        parts = parts[1:]  # keep the most specific headings
    if tokens > HEADING_TOKEN_BUDGET:
        text = text[: max(1, len(text) * HEADING_TOKEN_BUDGET // tokens)]
        tokens = counter.count([text])[0]
    return text, tokens


def _render(units: Sequence[_Unit]) -> str:
    out: list[str] = []
    for i, unit in enumerate(units):
        if i:
            out.append("\n\n" if unit.paragraph != units[i - 1].paragraph else unit.joiner)
        out.append(unit.text)
    return "".join(out)


def _pack(units: list[_Unit], budget: int, overlap: int) -> list[list[_Unit]]:
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    used = 0

    def paragraph_tokens(start: int) -> int:
        para = units[start].paragraph
        total = 0
        for unit in units[start:]:
            if unit.paragraph != para:
                break
            total += unit.tokens
        return total

    for i, unit in enumerate(units):
        starts_paragraph = i == 0 or units[i - 1].paragraph != unit.paragraph
        fits = used + unit.tokens <= budget
        # Keep a paragraph whole: flush early when it would not fit here but fits in a fresh chunk.
        flush_early = (starts_paragraph and current and used >= budget // 2
                       and used + paragraph_tokens(i) > budget and paragraph_tokens(i) <= budget - overlap)
        if current and (not fits or flush_early):
            chunks.append(current)
            carried: list[_Unit] = []
            carried_tokens = 0
            for prev in reversed(current):
                if carried_tokens + prev.tokens > overlap or carried_tokens + prev.tokens + unit.tokens > budget:
                    break
                carried.insert(0, prev)
                carried_tokens += prev.tokens
            if len(carried) == len(current):  # an overlap equal to the whole chunk would repeat it
                carried, carried_tokens = [], 0
            current, used = carried, carried_tokens
        current.append(unit)
        used += unit.tokens
    if current:
        chunks.append(current)
    return chunks


def chunk_blocks(blocks: Sequence[Block], counter: TokenCounter, *, max_tokens: int = 200,
                 overlap: int = 40) -> list[ChunkDraft]:
    """Passages of at most `max_tokens` tokens (plus their heading path), `overlap` tokens carried over."""
    sections = _sections(blocks)
    all_units = [u for s in sections for u in s.units]
    for unit, n in zip(all_units, counter.count([u.text for u in all_units]), strict=True):
        unit.tokens = n

    drafts: list[ChunkDraft] = []
    for section in sections:
        units: list[_Unit] = []
        for unit in section.units:
            units.extend(_split_long(unit, counter, max_tokens) if unit.tokens > max_tokens else [unit])
        heading, _ = _heading_text(section.heading, counter)
        for group in _pack(units, max_tokens, overlap):
            text = _render(group)
            drafts.append(ChunkDraft(len(drafts), text, heading, section.page, sum(u.tokens for u in group)))
    return drafts
