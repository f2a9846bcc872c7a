"""The gateway's API schemas for documents and search (apart from the ORM models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[EvalQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)
    label: str = Field(default="eval", min_length=1, max_length=200, description="the set's name in stored runs")
    retrieval_only: bool = Field(default=False, description="score retrieval alone (no answers generated)")
    stream: bool = Field(default=False, description="SSE: a `result` event per question, then `done`")
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
