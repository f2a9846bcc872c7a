"""API schemas of image generation (`POST /api/generate-image`, `/api/images`), apart from the ORM model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.protocol.images import JOB_ID_PATTERN, MAX_PROMPT_CHARS, SEED_MAX


class ImageCreate(BaseModel):
    """The seed's request; sizes and steps are also checked against AION_IMAGE_MAX_SIDE / _MAX_STEPS."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    width: int = Field(default=512, ge=64, description="pixels, a multiple of 8")
    height: int = Field(default=512, ge=64, description="pixels, a multiple of 8")
    num_inference_steps: int = Field(default=20, ge=1)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="random when omitted")
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN,
                               description="a name to follow progress at /api/images/jobs/{job_id} or cancel it")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value


class ImagePublic(BaseModel):
    id: uuid.UUID
    image_url: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    model: str
    ms: int
    size_bytes: int
    created_by: str
    created_at: datetime


class ImageCreated(BaseModel):
    """The seed's reply: `{image_url, metadata: {prompt, parameters, …}}`."""

    image_url: str
    metadata: dict[str, Any]


class ImagePage(BaseModel):
    items: list[ImagePublic]
    total: int
    limit: int
    offset: int


class ImageDeleted(BaseModel):
    id: uuid.UUID
    deleted: bool = True
