"""Follow-up questions ("and the second one?") rewritten into standalone ones before retrieval.

The local model rewrites with a short prompt and a few tokens; what it returns is checked (one line,
a sane length, no echo of the instructions, and almost every content word taken from the conversation,
so an invented subject is refused). When the model is down or its rewrite fails the check, a
deterministic rewrite stands in: the content words of the previous question, then the new question.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..clients.chat import ChatClient, ChatUnavailable
from .language import Language
from .support import content_words, terms

logger = logging.getLogger(__name__)

RewriteMethod = Literal["model", "rule"]

INSTRUCTIONS: dict[Language, str] = {
    "en": "Rewrite the user's last question so that it can be understood without the conversation. "
          "Reply with the rewritten question only.",
    "pt": "Reescreva a última pergunta do usuário para que possa ser entendida sem a conversa. "
          "Responda apenas com a pergunta reescrita.",
}
_LABELS: dict[Language, tuple[str, str, str]] = {
    "en": ("User", "Assistant", "Last question"),
    "pt": ("Usuário", "Assistente", "Última pergunta"),
}
_PREFIX = re.compile(r"^\s*(?:rewritten question|question|pergunta reescrita|pergunta|standalone question)\s*:\s*",
                     re.IGNORECASE)
# Of the rewrite's content words, at least this share must come from the conversation or the question.
_MIN_GROUNDED = 0.8
_TURN_CHARS = 400  # each earlier turn, as shown to the rewriter (the recent words matter, not whole answers)
_RULE_WORDS = 30  # of the previous question, at most
_LONG_QUESTION = 1000  # characters: such a question is not a terse follow-up
_MAX_REWRITE = 1000


@dataclass(frozen=True)
class Rewrite:
    question: str  # what retrieval searches for
    method: RewriteMethod


class QuestionRewriter:
    def __init__(self, client: ChatClient, *, max_tokens: int = 48, turns: int = 4) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.turns = turns

    async def rewrite(self, question: str, history: Sequence[dict[str, str]], language: Language, *,
                      request_id: str | None = None) -> Rewrite:
        """A standalone version of `question`; only call it when there is history."""
        recent = list(history[-self.turns:])
        if self.max_tokens == 0 or len(question) > _LONG_QUESTION:
            return Rewrite(rule_rewrite(question, recent), "rule")
        try:
            result = await self.client.complete(self._messages(question, recent, language),
                                                max_tokens=self.max_tokens, temperature=0.0, request_id=request_id)
            candidate = clean(result.text)
            if acceptable(candidate, question, recent):
                return Rewrite(candidate, "model")
            logger.info("the model's rewrite %r was refused; using the rule", candidate[:200])
        except ChatUnavailable as exc:
            logger.info("no model to rewrite the follow-up (%s); using the rule", exc)
        return Rewrite(rule_rewrite(question, recent), "rule")

    @staticmethod
    def _messages(question: str, history: Sequence[dict[str, str]], language: Language) -> list[dict[str, str]]:
        user, assistant, last = _LABELS[language]
        lines = [f"{user if t['role'] == 'user' else assistant}: {t['content'].strip()[:_TURN_CHARS]}"
                 for t in history]
        return [{"role": "system", "content": INSTRUCTIONS[language]},
                {"role": "user", "content": "\n".join(lines) + f"\n\n{last}: {question.strip()}"}]


def clean(text: str) -> str:
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    return _PREFIX.sub("", line).strip().strip("\"“”'")


def acceptable(candidate: str, question: str, history: Sequence[dict[str, str]]) -> bool:
    """One question-sized line that keeps the follow-up's own words and takes the rest from the conversation
    (not from the instructions, nor from the model's imagination)."""
    if not 3 <= len(candidate) <= min(_MAX_REWRITE, max(300, 3 * len(question))):
        return False
    said = set(terms(candidate))
    if not said or said <= set(terms(question)) and len(candidate) <= len(question):
        return False  # empty, or the question again with nothing added
    if any(len(said & set(terms(i))) >= 4 for i in INSTRUCTIONS.values()):
        return False
    asked = set(terms(question))
    if asked and len(said & asked) * 2 < len(asked):
        return False  # it dropped what the follow-up asks (the model answered instead of rewriting)
    known = asked.union(*(set(terms(t["content"])) for t in history))
    return len(said & known) / len(said) >= _MIN_GROUNDED


def rule_rewrite(question: str, history: Sequence[dict[str, str]]) -> str:
    """The previous question's content words, then the new question: retrieval sees both subjects.

    A long question is its own context (and must stay under the query length limit): it is kept as is.
    """
    if len(question) > _LONG_QUESTION:
        return question.strip()
    previous = next((t["content"] for t in reversed(history) if t["role"] == "user"), "")
    return f"{' '.join(content_words(previous)[:_RULE_WORDS])} {question.strip()}".strip()
