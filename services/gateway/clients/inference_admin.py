"""The inference service's adapter routes, for promotion and the admin proxies."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from shared.errors import AionError, ServiceUnavailable


class InferenceAdminError(AionError):
    """The inference service refused an adapter operation; its status and message are passed on."""


class InferenceAdmin:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the inference service at {self.base_url} is unreachable: {exc}; "
                                     "check that it runs and AION_LOCAL_LLM_URL") from exc
        try:
            body = r.json()
        except ValueError:
            body = {"error": {"message": r.text[:500]}}
        if r.status_code >= 400:
            message = (body.get("error") or {}).get("message") or r.text[:500]
            status = r.status_code if r.status_code < 500 else 503
            raise InferenceAdminError(f"inference {path}: {message}", status_code=status,
                                      code="inference_refused")
        return body

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def load(self, path: str, name: str, activate: bool) -> dict[str, Any]:
        return await self._call("POST", "/adapter/reload", json={"path": path, "name": name, "activate": activate})

    async def activate(self, name: str | None) -> dict[str, Any]:
        return await self._call("POST", "/adapter/activate", json={"name": name})

    async def reload_default(self) -> dict[str, Any]:
        return await self._call("POST", "/adapter/reload", json={})

    async def merge(self) -> dict[str, Any]:
        return await self._call("POST", "/adapter/merge")

    async def adapters(self) -> dict[str, Any]:
        return await self._call("GET", "/adapters")

    async def unload(self, name: str) -> dict[str, Any]:
        """Free an adapter's memory in the inference service (409 while it is active or serving)."""
        return await self._call("DELETE", f"/adapters/{quote(name, safe='')}")

    async def smoke(self, model: str, prompt: str = "Responda em uma frase: o que é a AION?") -> str:
        """One short greedy generation on `model`; raises unless it returns text."""
        body = await self._call("POST", "/v1/chat/completions", json={
            "model": model, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}]})
        text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        if not text.strip():
            raise InferenceAdminError(f"smoke generation on '{model}' returned no text", status_code=409,
                                      code="smoke_failed")
        return text
