"""Wires the hardening into the app: request guard, body size cap, security headers, CORS."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.logging import REQUEST_ID_HEADER
from shared.redaction import register_secrets

from ..auth.middleware import GuardMiddleware
from ..settings import GatewaySettings
from .body_limit import BodyLimitMiddleware
from .headers import SecurityHeadersMiddleware
from .origin import LocalOnlyMiddleware

logger = logging.getLogger(__name__)


def install_security(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the middlewares, innermost first: body cap, guard, local-only checks (auth off), headers, then
    CORS outermost so that
    preflights are answered and even 401/413/429 replies carry the CORS headers a browser needs."""
    register_secrets([settings.openai_api_key, settings.inference_token, _database_password(settings.database_url)])
    if not settings.auth_enabled:
        logger.warning("AION_AUTH=off: NO API KEYS ARE CHECKED; every caller on %s is admin of tenant '%s'. "
                       "Local development only; set AION_AUTH=on before anyone else can reach this port.",
                       settings.host, settings.tenant_id)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(GuardMiddleware, settings=settings)
    if not settings.auth_enabled:
        # Before the guard: a rebinding page or a cross-site form never reaches the open admin API.
        app.add_middleware(LocalOnlyMiddleware, settings=settings)
    app.add_middleware(SecurityHeadersMiddleware)
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
                           expose_headers=[REQUEST_ID_HEADER, "Retry-After"], max_age=600)


def _database_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password  # type: ignore[return-value]
    except ArgumentError:
        return None
