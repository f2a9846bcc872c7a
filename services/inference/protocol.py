"""The native (seed) dialect of the inference service: /generate, /generate/stream, /adapter/*."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, description="the user's message")
    system: str | None = None
    context: str | None = ""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0,
                                            description="minus this x times a token was generated already")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0,
                                           description="minus this once a token was generated already")
    max_new_tokens: int | None = None
    stop: list[str] | None = Field(default=None, max_length=4)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1, description="a 64-bit signed integer")
    adapter: str | None = Field(default=None, description="adapter name; the active one when omitted")
    ignore_eos: bool = Field(default=False, description="generate max_new_tokens even past end-of-sequence "
                                                        "(for benchmarks)")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value and any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    ok: bool = True
    ms: int
    text: str
    finish_reason: str
    usage: Usage
    adapter: str | None = None


class AdapterReloadRequest(BaseModel):
    path: str | None = Field(default=None, description="adapter folder; AION_ADAPTER_DIR when omitted")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                             description="versioned name; derived from the folder and its content hash when omitted")
    activate: bool = True


class AdapterActivateRequest(BaseModel):
    name: str | None = Field(default=None, description="adapter to serve by default; null for the base weights")
