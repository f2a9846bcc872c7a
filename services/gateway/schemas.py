"""The gateway's API schemas (apart from the ORM models): documents, search, chat, feedback, conversations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .services.eval_set import MAX_QUESTIONS, EvalQuestion


class DocumentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    source_name: str
    title: str | None
    mime_type: str
    sha256: str
    size_bytes: int
    chunk_count: int
    meta: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ChunkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ord: int
    text: str
    heading: str | None
    page: int | None
    token_count: int


class DocumentDetail(DocumentPublic):
    chunks: list[ChunkPublic] | None = None


class DocumentPage(BaseModel):
    items: list[DocumentPublic]
    total: int
    limit: int
    offset: int


class DocumentDeleted(BaseModel):
    id: uuid.UUID
    deleted: bool = True
    chunks_deleted: int


class FileResultPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    filename: str
    status: Literal["created", "replaced", "duplicate", "refused", "failed"]
    http_status: int
    document_id: uuid.UUID | None = None
    chunk_count: int | None = None
    title: str | None = None
    reason: str | None = None
    code: str | None = None


class IngestResponse(BaseModel):
    results: list[FileResultPublic]
    ingested: int
    refused: int


class SearchRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    q: str = Field(min_length=1, description="the question or search text")
    k: int | None = Field(default=None, ge=1, le=50, description="passages to return (default AION_TOP_K)")
    top_n: int | None = Field(default=None, ge=1, le=200, description="ANN candidates (default AION_TOP_N)")
    lam: float | None = Field(default=None, ge=0.0, le=1.0, alias="lambda",
                              description="MMR relevance/diversity trade-off (default AION_MMR_LAMBDA)")
    vector_weight: float | None = Field(default=None, ge=0.0, le=10.0,
                                        description="the ANN arm's fusion weight, 0: off (default "
                                                    "AION_RETRIEVAL_VECTOR_WEIGHT)")
    text_weight: float | None = Field(default=None, ge=0.0, le=10.0,
                                      description="the full-text arm's fusion weight, 0: off (default "
                                                  "AION_RETRIEVAL_TEXT_WEIGHT)")


class PassagePublic(BaseModel):
    rank: int
    ann_rank: int | None = Field(description="position among the ANN candidates; null: found by full text only")
    text_rank: int | None = Field(default=None, description="position among the full-text candidates")
    fused: float = Field(default=0.0, description="reciprocal-rank-fusion score (orders the candidates)")
    score: float = Field(description="cosine similarity to the question (0 when it could not be embedded)")
    chunk_id: int
    document_id: uuid.UUID
    document: str  # the document's source name
    title: str | None
    page: int | None
    heading: str | None
    page_or_heading: str | None
    text: str


class SearchResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    query: str
    C: float = Field(description="retrieval confidence in [0, 1]")
    k: int
    top_n: int
    lam: float = Field(alias="lambda")
    candidates: int
    passages: list[PassagePublic]
    embed_ms: float
    search_ms: float
    arms: dict[str, float] = Field(default_factory=dict, description="the fusion weights this search ran with")
    warnings: list[dict[str, Any]] = Field(default_factory=list,
                                           description="e.g. embeddings_unavailable: full-text search alone")
    request_id: str | None = None


# -- chat, feedback, conversations ------------------------------------------------------------------

def _model_choice() -> Any:
    """A model choice: 'default', 'base' or an adapter's registry name (no control characters: no NUL for
    Postgres text)."""
    return Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
                 description="'default' (the active adapter, else the base), 'base', or an adapter version; "
                             "GET /api/ai/chat/options lists them")


class HistoryTurn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, description="the question")
    forceFallback: bool = False  # noqa: N815 — the seed's name
    tau: float | None = Field(default=None, ge=0.0, le=1.0, description="confidence threshold for this request")
    history: list[HistoryTurn] = Field(default_factory=list, max_length=20,
                                       description="earlier turns kept by the client (instead of conversation_id)")
    conversation_id: uuid.UUID | None = Field(default=None, description="continue this stored conversation")
    store: bool = Field(default=True, description="keep the exchange as a conversation the server stores "
                                                   "(a new one unless conversation_id is given)")
    # None: the conversation's stored choice (a new one: the default); a value is also stored on it.
    model: str | None = _model_choice()

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
    url: str | None = None  # a web page's address


class UsageOut(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0


class ChatResponse(BaseModel):
    text: str
    # local / fallback: that model wrote the text; documents: the passages' own sentences, quoted.
    used: Literal["local", "fallback", "documents"]
    answer: Literal["generated", "quoted", "not_found"]
    C: float = Field(description="retrieval match: how well the passages match the question (0..1)")
    support: float | None = Field(description="answer support: how much of the answer its passages back (0..1)")
    model: str | None
    language: Literal["pt", "en"] | None = None
    conversation_id: uuid.UUID | None = None
    rewritten: str | None = Field(default=None, description="the standalone question a follow-up became")
    sources: list[SourceOut]
    request_id: str
    usage: UsageOut
    warnings: list[str]
    latency_ms: int
    cached: bool = Field(default=False, description="replayed from the response cache (no model ran)")
    cache: Literal["l1", "l2", "semantic"] | None = Field(
        default=None, description="where the cached answer was found: this process, Postgres, or a question "
                                  "close in meaning")
    saved_usd: float | None = Field(default=None, description="what the cached answer cost when it was made")
    cache_similarity: float | None = Field(default=None, description="semantic hits: the questions' cosine "
                                                                     "similarity")


class FeedbackRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class ConversationSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    turn_count: int
    model: str | None = Field(description="the model chosen for it: null the default, 'base', or an adapter")
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    total: int
    limit: int
    offset: int


class ConversationTurnOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ord: int
    role: Literal["user", "assistant"]
    content: str
    request_id: str | None
    meta: dict[str, Any] = Field(description="assistant turns: used, model, C, support, answer, warnings, sources")
    created_at: datetime


class ConversationDetail(ConversationSummary):
    turns: list[ConversationTurnOut]


class ConversationRename(BaseModel):
    """PATCH: a new title, a new model choice, or both."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = _model_choice()

    @field_validator("title")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("title must not be blank")
        if "\x00" in value:  # Postgres text cannot hold it
            raise ValueError("title must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _something(self) -> ConversationRename:
        if self.title is None and self.model is None:
            raise ValueError("send a title, a model, or both")
        return self


class ConversationDeleted(BaseModel):
    id: uuid.UUID
    deleted: bool = True


class ModelOption(BaseModel):
    id: str = Field(description="what a chat request or a conversation sends as `model`")
    kind: Literal["default", "base", "adapter"]
    serves: str | None = Field(description="the model or adapter that answers for it now (null: unknown)")
    status: str | None = Field(description="adapters: active, retired or candidate")
    created_at: datetime | None


class ChatLimits(BaseModel):
    max_question_chars: int = Field(description="the longest question the chat routes accept (AION_MAX_QUERY_CHARS)")


class ChatOptions(BaseModel):
    """What a chat client needs to know before asking: the server's limits and the models it may choose."""

    limits: ChatLimits
    models: list[ModelOption]


# -- evaluation runs ---------------------------------------------------------------------------------

class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[EvalQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)
    label: str = Field(default="eval", min_length=1, max_length=200, description="the set's name in stored runs")
    retrieval_only: bool = Field(default=False, description="score retrieval alone (no answers generated)")
    stream: bool = Field(default=False, description="SSE: a `result` event per question, then `done`")
    tau: float | None = Field(default=None, ge=0.0, le=1.0,
                              description="the confidence threshold for this run (default: AION_TAU_CONFIDENCE); "
                                          "0 keeps every question on the local model unless the passages do not "
                                          "back its answer")
    vector_weight: float | None = Field(default=None, ge=0.0, le=10.0,
                                        description="retrieval-only runs: the ANN arm's weight (0: off)")
    text_weight: float | None = Field(default=None, ge=0.0, le=10.0,
                                      description="retrieval-only runs: the full-text arm's weight (0: off)")


class EvalRunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    label: str
    set_sha256: str
    mode: str
    questions: int
    model: str | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    duration_s: float
    created_at: datetime


class EvalRunList(BaseModel):
    runs: list[EvalRunPublic]
