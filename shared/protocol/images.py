"""Image generation on the wire: OpenAI's `POST /v1/images/generations` and the seed's `POST /generate-image`.

The inference service serves both; the gateway calls the OpenAI one and parses the reply with these models.
Sizes and step counts are checked against the service's settings in the service, not here (limits are
settings, and the message names them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_PROMPT_CHARS = 4000
SEED_MAX = 2**32 - 1


class ImageParameters(BaseModel):
    """The prompt and the seed's parameters, shared by both dialects."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what the image shows")
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                                        description="what the image should not show")
    num_inference_steps: int | None = Field(default=None, ge=1, description="denoising steps (default 20)")
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0,
                                         description="how closely to follow the prompt (default 7.5)")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="same seed, same image; random if omitted")
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN,
                               description="a name for this generation, to follow its progress or cancel it")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value


class ImageGenerationRequest(ImageParameters):
    """OpenAI's request (`quality`, `style` and `user` are accepted and ignored) plus the seed's parameters."""

    model: str | None = None
    n: int = Field(default=1, ge=1)
    size: str = Field(default="512x512", pattern=r"^\d{1,5}x\d{1,5}$", description="WIDTHxHEIGHT in pixels")
    response_format: Literal["url", "b64_json"] = "url"
    quality: str | None = None
    style: str | None = None
    user: str | None = None

    def dimensions(self) -> tuple[int, int]:
        width, height = self.size.split("x")
        return int(width), int(height)


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImageRunInfo(BaseModel):
    """What produced the images (an AION extension of OpenAI's reply; OpenAI clients ignore it)."""

    job_id: str
    model: str
    device: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    ms: int
    nsfw: list[bool] | None = None


class ImageGenerationResponse(BaseModel):
    created: int
    data: list[ImageData]
    aion: ImageRunInfo | None = None


class NativeImageRequest(ImageParameters):
    """The seed's `ImageRequest`: prompt, negative prompt, size, steps, guidance (and a seed)."""

    width: int = Field(default=512, ge=8)
    height: int = Field(default=512, ge=8)


class NativeImageResponse(BaseModel):
    """The seed's reply, `{image_url, metadata}`; from the inference service the URL is a `data:` URL."""

    ok: bool = True
    ms: int
    image_url: str
    metadata: dict[str, Any]


class ImageJobStatus(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "cancelled", "failed"]
    step: int
    steps: int
    position: int | None = Field(default=None, description="generations ahead of this one while it waits")
    error: str | None = None
