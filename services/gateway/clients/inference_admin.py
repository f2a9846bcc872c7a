"""The inference service's adapter routes, for promotion and the admin proxies."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from shared.errors import AionError, Conflict, ServiceUnavailable


class InferenceAdminError(AionError):
    """The inference service refused an adapter operation; its status and message are passed on."""


class AdminHttp:
    """What both backends' admin clients share: one HTTP client, errors passed on as AionErrors, the smoke test."""

    label = "inference"

    def __init__(self, base_url: str, token: str | None, timeout_s: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the {self.label} server at {self.base_url} is unreachable: {exc}; "
                                     "check that it runs and AION_LOCAL_LLM_URL") from exc

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = await self._request(method, path, **kwargs)
        body = _json(r)
        if r.status_code >= 400:
            status = r.status_code if r.status_code < 500 else 503
            raise InferenceAdminError(f"{self.label} {path}: {error_message(r)}", status_code=status,
                                      code="inference_refused")
        return body

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


class InferenceAdmin(AdminHttp):
    """AION's inference service: it keeps a default adapter of its own (`/adapter/activate`)."""

    kind = "aion"

    async def health(self) -> dict[str, Any]:
        return {**await self._call("GET", "/health"), "backend": self.kind}

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/status")

    async def load(self, path: str, name: str, activate: bool) -> dict[str, Any]:
        return await self._call("POST", "/adapter/reload", json={"path": path, "name": name, "activate": activate})

    async def activate(self, name: str | None) -> dict[str, Any]:
        return await self._call("POST", "/adapter/activate", json={"name": name})

    async def unload(self, name: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/adapters/{quote(name, safe='')}")

    async def reload_default(self) -> dict[str, Any]:
        return await self._call("POST", "/adapter/reload", json={})

    async def merge(self) -> dict[str, Any]:
        return await self._call("POST", "/adapter/merge")

    async def adapters(self) -> dict[str, Any]:
        return await self._call("GET", "/adapters")


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"error": {"message": r.text[:500]}}
    return body if isinstance(body, dict) else {"data": body}


def error_message(r: httpx.Response) -> str:
    """The message of an error answer, in AION's and OpenAI's shape or in vLLM's older flat one."""
    body = _json(r)
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(body.get("message") or body.get("detail") or r.text[:500] or f"HTTP {r.status_code}")


def not_on_backend(what: str, kind: str, instead: str) -> Conflict:
    return Conflict(f"{what} is not available with AION_INFERENCE_BACKEND={kind}; {instead}",
                    code="not_supported_by_backend")
