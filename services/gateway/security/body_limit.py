"""A cap on request bodies, enforced while they stream in (Content-Length alone can be absent or lie)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_body

from ..auth.policy import route_path
from ..settings import GatewaySettings

UPLOAD_PATH = "/api/ai/documents"
# Multipart framing around the files: part headers and boundaries.
_MULTIPART_OVERHEAD = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.body_cap = settings.max_body_bytes
        self.upload_cap = settings.max_upload_bytes * settings.max_upload_files + _MULTIPART_OVERHEAD
        self.body_hint = f"{settings.max_body_mb:g} MB (AION_MAX_BODY_MB)"
        self.upload_hint = (f"{settings.max_upload_files} files of {settings.max_upload_mb:g} MB "
                            "(AION_MAX_UPLOAD_FILES, AION_MAX_UPLOAD_MB); send fewer files per request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and route_path(scope).rstrip("/") == UPLOAD_PATH
        cap = self.upload_cap if upload else self.body_cap
        message = f"the request body is larger than the limit of {self.upload_hint if upload else self.body_hint}"
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(message, scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > cap:
                    exceeded = True
                    # Whoever reads the body stops here; FastAPI re-raises HTTP exceptions from parsing.
                    raise BodyTooLarge(message)
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's own reply to the aborted read is replaced by the 413 below
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            await _refuse(message, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(message: str, scope: Scope, receive: Receive, send: Send) -> None:
    # Connection: close — the rest of the body is not read, so the connection cannot be reused.
    response = JSONResponse(error_body(message, "body_too_large", "invalid_request_error"), status_code=413,
                            headers={"Connection": "close"})
    await response(scope, receive, send)

