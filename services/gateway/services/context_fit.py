"""Fitting a prompt into the model's context: how many passages and how long, and which turns of history.

Counts are the embedding tokenizer's (services/tokens.py) scaled up, never below one token per three
characters: on the demo and test documents SmolLM2's BPE gives 1.01-1.21x MiniLM's WordPiece count
and 2.9-4.3 characters a token, so the estimate errs towards trimming a little early, never towards a
prompt the model refuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.errors import BadRequest

from .tokens import TokenCounter

# What the chat template adds around each message (role markers, separators), generously.
MESSAGE_OVERHEAD_TOKENS = 8
_CHAT_TO_EMBEDDING_RATIO = 1.25
# A passage cut to less than this says too little to be worth its citation number.
MIN_PASSAGE_TOKENS = 32
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class PromptTooLong(BadRequest):
    code = "prompt_too_long"


@dataclass(frozen=True)
class PromptBudget:
    window: int  # the model's context length, in its tokens
    answer_tokens: int  # room kept for the answer (the max_tokens the model is asked for)
    passage_tokens: int  # what all passages together may take
    max_passages: int

    @classmethod
    def for_window(cls, window: int, *, answer_tokens: int, passage_tokens: int, max_passages: int,
                   window_share: float = 0.25) -> PromptBudget:
        """Passages get at most `window_share` of the context (and never more than the setting allows)."""
        room = max(0, window - answer_tokens)
        return cls(window=window, answer_tokens=answer_tokens, max_passages=max_passages,
                   passage_tokens=min(passage_tokens, int(room * window_share)))

    @property
    def prompt_tokens(self) -> int:
        return self.window - self.answer_tokens


class ChatTokens:
    """Token estimates for the chat model, from the embedding model's counter."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def text(self, text: str) -> int:
        counted = self.counter.count([text])[0] if text else 0
        return max(math.ceil(len(text) / 3), math.ceil(counted * _CHAT_TO_EMBEDDING_RATIO))

    def messages(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(self.text(m.get("content") or "") + MESSAGE_OVERHEAD_TOKENS for m in messages) + 2


def cut_to_tokens(text: str, limit: int, tokens: ChatTokens) -> str:
    """`text` if it fits; else its leading sentences that fit (or its leading words, for one long sentence)."""
    if tokens.text(text) <= limit:
        return text
    kept: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        if tokens.text(" ".join([*kept, sentence])) > limit:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    words = text.split()
    low, high = 0, len(words)
    while low < high:  # the most leading words that fit
        mid = (low + high + 1) // 2
        if tokens.text(" ".join(words[:mid]) + " …") <= limit:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low]) + " …" if low else ""


def fit_passages(texts: Sequence[str], budget: PromptBudget, tokens: ChatTokens) -> list[str]:
    """The passages (in retrieval order) that fit the budget, the last one cut at a sentence if need be."""
    chosen: list[str] = []
    left = budget.passage_tokens
    for text in texts[:budget.max_passages]:
        cost = tokens.text(text) + 4  # "[n] " and the blank line between passages
        if cost <= left:
            chosen.append(text)
            left -= cost
            continue
        if left - 4 >= MIN_PASSAGE_TOKENS or not chosen:
            cut = cut_to_tokens(text, max(left - 4, MIN_PASSAGE_TOKENS), tokens)
            if cut:
                chosen.append(cut)
        break
    return chosen


def fit_history(build: Callable[[Sequence[dict[str, str]]], list[dict[str, str]]],
                history: Sequence[dict[str, str]], budget: PromptBudget,
                tokens: ChatTokens) -> tuple[list[dict[str, str]], int]:
    """Messages built with as much recent history as fits, and how many turns were dropped (oldest first).

    Raises PromptTooLong when even no history leaves the question and its passages too big.
    """
    for start in range(len(history) + 1):
        kept = list(history[start:])
        if kept and kept[0].get("role") == "assistant":
            continue  # a conversation resumes on a question, never on half an exchange
        messages = build(kept)
        needed = tokens.messages(messages)
        if needed <= budget.prompt_tokens:
            return messages, start
    raise PromptTooLong(
        f"the question and its passages need about {needed} tokens, but the model's context holds "
        f"{budget.window} with {budget.answer_tokens} kept for the answer; ask a shorter question, or lower "
        "AION_LOCAL_MAX_TOKENS or AION_PROMPT_PASSAGE_TOKENS")
