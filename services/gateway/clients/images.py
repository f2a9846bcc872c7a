"""Image generation on the inference service (`/v1/images/generations` and its job routes)."""

from __future__ import annotations

import httpx

from shared.errors import BadRequest, ServiceUnavailable
from shared.logging import REQUEST_ID_HEADER, request_id_var
from shared.protocol.images import ImageGenerationRequest, ImageGenerationResponse, ImageJobStatus


class ImageClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, token: str | None = None,
                 timeout_s: float = 900.0) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def generate(self, request: ImageGenerationRequest) -> ImageGenerationResponse:
        response = await self._call("POST", "/v1/images/generations",
                                    json=request.model_dump(exclude_none=True))
        return ImageGenerationResponse.model_validate_json(response.content)

    async def job(self, job_id: str) -> ImageJobStatus:
        return ImageJobStatus.model_validate_json((await self._call("GET", f"/v1/images/jobs/{job_id}")).content)

    async def cancel(self, job_id: str) -> ImageJobStatus:
        response = await self._call("POST", f"/v1/images/jobs/{job_id}/cancel")
        return ImageJobStatus.model_validate_json(response.content)

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        rid = request_id_var.get()
        headers = {**self.headers, REQUEST_ID_HEADER: rid} if rid else self.headers
        try:
            response = await self.http.request(method, self.base_url + path, headers=headers, timeout=self.timeout,
                                               **kwargs)
        except httpx.TimeoutException as exc:
            raise self._unavailable("did not answer in time (AION_IMAGES_TIMEOUT)") from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(f"is not reachable ({type(exc).__name__})") from exc
        if response.status_code == 200:
            return response
        message = _error_message(response)
        if response.status_code in (401, 403):
            raise self._unavailable("refused the gateway's token (check AION_INFERENCE_TOKEN on both sides)")
        if response.status_code == 404 and "images/jobs" not in path:
            raise self._unavailable("has no image routes (is it an older AION, or another server?)")
        if response.status_code < 500:
            # The service's own 4xx (a limit, a cancel, an unknown job) says what to do: pass it on.
            raise BadRequest(message, status_code=response.status_code, code=_error_code(response) or "bad_request")
        headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else None
        raise ServiceUnavailable(message, code=_error_code(response) or "images_unavailable", headers=headers)

    def _unavailable(self, what: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"the image service at {self.base_url} {what}; start `aion inference` with "
                                  "AION_IMAGE_MODEL set, or fix AION_IMAGES_URL / AION_LOCAL_LLM_URL",
                                  code="images_unavailable", headers={"Retry-After": "5"})


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None
