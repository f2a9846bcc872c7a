"""One error hierarchy for every service, rendered as an OpenAI-shaped error body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class AionError(Exception):
    """An expected failure with a message a person can act on."""

    status_code = 500
    code = "internal_error"
    error_type = "server_error"

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, as OpenAI's error body names it
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(AionError):
    status_code = 400
    code = "bad_request"
    error_type = "invalid_request_error"


class NotFound(AionError):
    status_code = 404
    code = "not_found"
    error_type = "invalid_request_error"


class Conflict(AionError):
    status_code = 409
    code = "conflict"
    error_type = "invalid_request_error"


class Unauthorized(AionError):
    status_code = 401
    code = "unauthorized"
    error_type = "authentication_error"


class Forbidden(AionError):
    status_code = 403
    code = "forbidden"
    error_type = "permission_error"


class TooManyRequests(AionError):
    status_code = 429
    code = "rate_limited"
    error_type = "rate_limit_error"


class ServiceUnavailable(AionError):
    status_code = 503
    code = "unavailable"
    error_type = "server_error"


def error_body(message: str, code: str, error_type: str, param: str | None = None) -> dict:
    """The body OpenAI clients know how to read."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    param = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    """Render AionError, validation errors and stray exceptions in one shape."""

    @app.exception_handler(AionError)
    async def _aion_error(_: Request, exc: AionError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.code, exc.error_type, exc.param),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_value", "invalid_request_error", param),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), f"http_{exc.status_code}", "invalid_request_error"),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("internal error; see the service log", "internal_error", "server_error"),
                            status_code=500)
