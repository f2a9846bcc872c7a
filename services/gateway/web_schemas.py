"""API schemas of web pages as documents (`POST /api/ai/documents/url`)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UrlIngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="an http(s) URL on a host in AION_URL_ALLOWLIST")
    depth: int = Field(default=0, ge=0, description="follow links this many levels (allowlisted hosts only)")
    refresh: str | None = Field(default=None, max_length=16,
                                description="re-fetch cadence: 'never' (default), '6h', '1d', '7d' …")


class PageResultPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    url: str
    status: Literal["created", "replaced", "duplicate", "unchanged", "refused", "failed"]
    http_status: int
    depth: int
    document_id: uuid.UUID | None = None
    chunk_count: int | None = None
    title: str | None = None
    reason: str | None = None
    code: str | None = None


class UrlIngestResponse(BaseModel):
    results: list[PageResultPublic]
    ingested: int
    refused: int
