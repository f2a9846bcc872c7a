"""An evaluation set: one JSON object per line, each a question and what a right outcome looks like.

    {"question": "...", "expect_document": "httpx.md", "expect_passage": "httpx[http2]",
     "answer_contains": ["http2"], "kind": "keyword"}
    {"question": "...", "unanswerable": true}

`expect_document` is a document's source name (as ingested); `expect_passage` a piece of text the
right passage contains (it narrows the document to a passage); `answer_contains` strings of which a
right answer contains at least one (case-insensitive); `unanswerable` marks questions the documents do
not cover (the right answer is "not found"). Imported by the CLI too: pydantic only, no database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_QUESTIONS = 1000


class EvalQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)
    id: str | None = Field(default=None, max_length=200)
    kind: str | None = Field(default=None, max_length=40, description="a tag for per-kind figures, e.g. keyword")
    lang: str | None = Field(default=None, max_length=10)
    expect_document: str | None = Field(default=None, min_length=1, max_length=1000)
    expect_passage: str | None = Field(default=None, min_length=1, max_length=2000)
    answer_contains: list[str] = Field(default_factory=list, max_length=50)
    unanswerable: bool = False

    @model_validator(mode="after")
    def _something_to_check(self) -> EvalQuestion:
        if self.unanswerable and (self.expect_document or self.answer_contains):
            raise ValueError("an unanswerable question has no expect_document or answer_contains")
        if not (self.unanswerable or self.expect_document or self.answer_contains):
            raise ValueError("give expect_document, answer_contains or unanswerable: true (nothing to check)")
        if self.expect_passage and not self.expect_document:
            raise ValueError("expect_passage needs expect_document (the document the passage is in)")
        if any(not s.strip() for s in self.answer_contains):
            raise ValueError("answer_contains has an empty string (it would match every answer)")
        if not self.question.strip():
            raise ValueError("the question is blank")
        return self


class EvalSetError(ValueError):
    """A line that is not a valid question; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_lines(lines: Iterable[str]) -> list[EvalQuestion]:
    """The questions of a JSONL text; blank lines and lines starting with # are skipped."""
    questions: list[EvalQuestion] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise EvalSetError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(data, dict):
            raise EvalSetError(number, f"expected a JSON object, got {type(data).__name__}")
        try:
            questions.append(EvalQuestion.model_validate(data))
        except ValidationError as exc:
            raise EvalSetError(number, "; ".join(_describe(e) for e in exc.errors())) from exc
        if len(questions) > MAX_QUESTIONS:
            raise EvalSetError(number, f"more than {MAX_QUESTIONS} questions; split the set")
    if not questions:
        raise EvalSetError(0, "no questions in the set")
    return questions


def set_digest(questions: list[EvalQuestion]) -> str:
    """The set's identity in stored runs: runs of the same questions compare."""
    canonical = json.dumps([q.model_dump(exclude_none=True) for q in questions], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
