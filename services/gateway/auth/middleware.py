"""The request guard: per-IP rate limit, API key, role, per-key rate limit — before any body is read.

A pure ASGI middleware rather than a route dependency because FastAPI reads (and spools) the body
before dependencies run: a caller without a key must be turned away before it can upload anything.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import AionError, Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized, error_body

from ..security.ratelimit import TokenBuckets
from ..settings import GatewaySettings
from . import policy, repository
from .keys import display_prefix, hash_key, looks_like_key
from .principal import Principal

logger = logging.getLogger(__name__)

PRINCIPAL_STATE_KEY = "principal"

_NO_KEY = ("this API needs a key: send `Authorization: Bearer aion_...`; an admin creates one with "
           "`aion keys create --name NAME --role user`")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings
        self.ip_buckets = TokenBuckets(settings.rate_ip_per_min, settings.rate_ip_burst)
        self.key_buckets = {
            "chat": TokenBuckets(settings.rate_chat_per_min, settings.rate_chat_burst),
            "api": TokenBuckets(settings.rate_api_per_min, settings.rate_api_burst),
        }
        # With auth off every caller is the local developer, admin of the configured tenant.
        self.local = Principal(key_id=None, name="local (AION_AUTH=off)", role="admin",
                               tenant_id=settings.tenant_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not policy.is_protected(policy.route_path(scope)) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._admit(scope)
        except AionError as exc:
            response = JSONResponse(error_body(exc.message, exc.code, exc.error_type), status_code=exc.status_code,
                                    headers=exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope) -> Principal:
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        decision = self.ip_buckets.take(ip)
        if not decision.allowed:
            raise self._limited(f"too many requests from {ip}", "AION_RATE_IP_PER_MIN", self.settings.rate_ip_per_min,
                                "AION_RATE_IP_BURST", self.settings.rate_ip_burst, decision.retry_after_s)
        principal = await self._authenticate(scope, ip) if self.settings.auth_enabled else self.local
        method, path = scope["method"], policy.route_path(scope)
        if policy.required_role(method, path) == "admin" and not principal.is_admin:
            raise Forbidden(f"{method} {path} needs an admin key; the key '{principal.name}' has the "
                            f"'{principal.role}' role")
        if principal.key_id is not None:
            kind = policy.bucket(path)
            decision = self.key_buckets[kind].take(principal.key_id)
            if not decision.allowed:
                rate, burst = (("AION_RATE_CHAT_PER_MIN", self.settings.rate_chat_per_min),
                               ("AION_RATE_CHAT_BURST", self.settings.rate_chat_burst)) if kind == "chat" else (
                    ("AION_RATE_API_PER_MIN", self.settings.rate_api_per_min),
                    ("AION_RATE_API_BURST", self.settings.rate_api_burst))
                raise self._limited(f"too many {kind} requests with the key '{principal.name}'", *rate, *burst,
                                    decision.retry_after_s)
        return principal

    async def _authenticate(self, scope: Scope, ip: str) -> Principal:
        key = _bearer(scope)
        if key is None:
            raise Unauthorized(_NO_KEY, headers={"WWW-Authenticate": "Bearer"})
        principal = None
        if looks_like_key(key):
            state = scope["app"].state.gateway
            try:
                async with state.sessions() as session:
                    principal = await repository.authenticate(session, hash_key(key))
                    await session.commit()
            except (DBAPIError, OSError) as exc:
                logger.warning("database unavailable while checking an API key: %s", exc.__class__.__name__)
                raise ServiceUnavailable("the database is unavailable; retry in a few seconds",
                                         code="database_unavailable", headers={"Retry-After": "2"}) from exc
        if principal is None:
            # Only an AION key's display prefix is logged (enough to recognise it, useless to an attacker);
            # anything else may be some other secret pasted by mistake, so none of it is.
            shown = f"{display_prefix(key)}…" if looks_like_key(key) else "not an AION key"
            logger.info("refused an unknown or revoked API key (%s) from %s", shown, ip)
            raise Unauthorized("the API key is unknown or revoked; ask an admin for a valid key "
                               "(`aion keys list` shows the active ones)", code="invalid_api_key",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return principal

    @staticmethod
    def _limited(what: str, rate_name: str, rate: float, burst_name: str, burst: int,
                 retry_after_s: int) -> TooManyRequests:
        return TooManyRequests(
            f"{what}: the limit is {rate:g} per minute with bursts of {burst} ({rate_name}, {burst_name}); "
            f"retry in {retry_after_s} s", headers={"Retry-After": str(retry_after_s)})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


def principal_from_state(state: Any) -> Principal | None:
    return getattr(state, PRINCIPAL_STATE_KEY, None)
