"""Wire models of the chat, feedback, budget and metrics routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class HistoryTurn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, description="the question")
    forceFallback: bool = False  # noqa: N815 — the seed's name
    tau: float | None = Field(default=None, ge=0.0, le=1.0, description="confidence threshold for this request")
    history: list[HistoryTurn] = Field(default_factory=list, max_length=20)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


class SourceOut(BaseModel):
    n: int
    document: str
    chunk: str
    title: str
    page_or_heading: str | None
    score: float
    text: str
    url: str | None = None


class UsageOut(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0


class ChatResponse(BaseModel):
    text: str
    used: Literal["local", "fallback"]
    C: float
    model: str | None
    sources: list[SourceOut]
    request_id: str
    usage: UsageOut
    warnings: list[str]
    latency_ms: int


class FeedbackRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)
