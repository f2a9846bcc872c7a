"""Embeddings from the inference service over its OpenAI-compatible HTTP API (the gateway has no torch)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import httpx
import numpy as np

from shared.errors import ServiceUnavailable
from shared.logging import REQUEST_ID_HEADER, request_id_var
from shared.protocol.openai import EmbeddingRequest, EmbeddingResponse

logger = logging.getLogger(__name__)


class InferenceClient:
    """Talks to `aion inference` (or any OpenAI-compatible server) on behalf of the gateway."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, *, token: str | None = None,
                 batch_size: int = 128, expected_dim: int | None = None,
                 on_error: Callable[[str], None] | None = None, url_setting: str = "AION_LOCAL_LLM_URL") -> None:
        self.http = http
        self.url_setting = url_setting
        self.on_error = on_error
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.expected_dim = expected_dim
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _unavailable(self, what: str, count: bool = True) -> ServiceUnavailable:
        if self.on_error and count:
            self.on_error("embeddings")
        server, start = (("the embeddings server", "`aion inference --embeddings-only`")
                         if self.url_setting == "AION_EMBEDDINGS_URL" else ("the inference service", "`aion inference`"))
        return ServiceUnavailable(f"{server} at {self.base_url} {what}; start it with {start} or fix {self.url_setting}",
                                  code="inference_unavailable", headers={"Retry-After": "5"})

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Normalized embeddings of `texts` as a float32 matrix, in as few calls as the batch size allows."""
        if not texts:
            return np.zeros((0, self.expected_dim or 0), dtype=np.float32)
        parts = [(await self._embed_batch(texts[i:i + self.batch_size]))[0]
                 for i in range(0, len(texts), self.batch_size)]
        return np.vstack(parts)

    async def probe(self) -> tuple[str, int]:
        """(model name, dimensions) of what the embeddings server serves, from one short text."""
        matrix, model = await self._embed_batch(["dimension check"], probing=True)
        return model, int(matrix.shape[1])

    async def _embed_batch(self, texts: list[str], probing: bool = False) -> tuple[np.ndarray, str]:
        """One call; `probing` (the start-up check): no dimension check, a short timeout, no error counted."""
        # base64 float32 is ~4x smaller than JSON floats and decodes without parsing numbers.
        body = EmbeddingRequest(input=texts, encoding_format="base64").model_dump(exclude_none=True)
        try:
            response = await self.http.post(f"{self.base_url}/v1/embeddings", json=body, headers=self._headers(),
                                            **({"timeout": 10.0} if probing else {}))
        except httpx.TimeoutException as exc:
            raise self._unavailable("did not answer in time", not probing) from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(f"is not reachable ({type(exc).__name__})", not probing) from exc
        if response.status_code in (401, 403):
            raise self._unavailable("refused the gateway's token (check AION_INFERENCE_TOKEN on both sides)",
                                    not probing)
        if response.status_code != 200:
            raise self._unavailable(f"answered {response.status_code}: {_error_message(response)}", not probing)
        parsed = EmbeddingResponse.model_validate_json(response.content)
        rows = sorted(parsed.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise self._unavailable(f"returned {len(rows)} embeddings for {len(texts)} inputs", not probing)
        matrix = np.vstack([_decode(row.embedding) for row in rows])
        if not probing and self.expected_dim and matrix.shape[1] != self.expected_dim:
            raise ServiceUnavailable(
                f"the embedding model '{parsed.model}' gives {matrix.shape[1]} dimensions but the knowledge "
                f"base stores {self.expected_dim}; serve a {self.expected_dim}-dimension model",
                code="embedding_dimension_mismatch")
        return matrix, parsed.model

    def _headers(self) -> dict[str, str]:
        # The caller's request id rides along, so one id finds a request in both services' logs.
        rid = request_id_var.get()
        return {**self.headers, REQUEST_ID_HEADER: rid} if rid else self.headers

    async def health(self) -> str:
        """`ready`, `loading`, or `unreachable` — for the gateway's own /health."""
        try:
            response = await self.http.get(f"{self.base_url}/health", timeout=2.0)
            return str(response.json().get("status", "unknown")) if response.status_code == 200 else "unreachable"
        except (httpx.HTTPError, ValueError):
            return "unreachable"


def _decode(embedding: list[float] | str) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
