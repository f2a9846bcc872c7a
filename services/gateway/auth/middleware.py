"""The request guard: per-IP rate limit, credential (API key or signed token), role, per-key rate limit —
before any body is read.

The per-IP buckets live in this process (they only slow down key guessing); the per-key ones live in
Postgres, so N gateway replicas enforce one limit, not N.

A pure ASGI middleware rather than a route dependency because FastAPI reads (and spools) the body
before dependencies run: a caller without a key must be turned away before it can upload anything.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import AionError, Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized, error_body

from ..repositories import rate_limits
from ..security.ratelimit import TokenBuckets
from ..settings import GatewaySettings
from . import policy, repository
from .keys import display_prefix, hash_key, looks_like_key
from .principal import Principal
from .tokens import (
    ISSUER,
    ExternalIssuer,
    TokenAuthority,
    build_external_issuer,
    looks_like_jwt,
    unverified_issuer,
)

logger = logging.getLogger(__name__)

PRINCIPAL_STATE_KEY = "principal"

_NO_KEY = ("this API needs a key: send `Authorization: Bearer aion_...`; an admin creates one with "
           "`aion keys create --name NAME --role user`")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings
        self.ip_buckets = TokenBuckets(settings.rate_ip_per_min, settings.rate_ip_burst)
        # (rate per minute, burst) per kind of call, per key.
        self.key_limits = {"chat": (settings.rate_chat_per_min, settings.rate_chat_burst),
                           "api": (settings.rate_api_per_min, settings.rate_api_burst)}
        self.external: ExternalIssuer | None = build_external_issuer(settings)
        # With auth off every caller is the local developer, admin of the configured tenant.
        self.local = Principal(key_id=None, name="local (AION_AUTH=off)", role="admin",
                               tenant_id=settings.tenant_id, via="local")

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
        if not self.settings.auth_enabled:
            return self.local
        credential = _bearer(scope)
        if credential is None:
            raise Unauthorized(_NO_KEY, headers={"WWW-Authenticate": "Bearer"})
        method, path = scope["method"], policy.route_path(scope)
        state = scope["app"].state.gateway
        try:
            async with state.sessions() as session:
                principal = await self._authenticate(session, scope["app"].state.tokens, credential, ip)
                if policy.required_role(method, path) == "admin" and not principal.is_admin:
                    raise Forbidden(f"{method} {path} needs an admin key; the key '{principal.name}' has the "
                                    f"'{principal.role}' role")
                await self._take(session, principal, policy.bucket(path))
                await session.commit()
        except (DBAPIError, OSError) as exc:
            logger.warning("database unavailable while checking a credential: %s", exc.__class__.__name__)
            raise ServiceUnavailable("the database is unavailable; retry in a few seconds",
                                     code="database_unavailable", headers={"Retry-After": "2"}) from exc
        return principal

    async def _take(self, session: AsyncSession, principal: Principal, kind: policy.Bucket) -> None:
        per_minute, burst = self.key_limits[kind]
        if per_minute <= 0 or principal.caller is None:
            return
        taken = await rate_limits.take(session, f"{kind}:{principal.caller}", per_second=per_minute / 60.0,
                                       capacity=float(max(burst, 1)))
        if not taken.allowed:
            await session.commit()  # the bucket's refill time is kept even when refused
            prefix = "AION_RATE_CHAT" if kind == "chat" else "AION_RATE_API"
            raise self._limited(f"too many {kind} requests with the key '{principal.name}'", f"{prefix}_PER_MIN",
                                per_minute, f"{prefix}_BURST", burst, taken.retry_after_s)

    async def _authenticate(self, session: AsyncSession, tokens: TokenAuthority, credential: str,
                            ip: str) -> Principal:
        """An API key (`aion_…`), an AION token, or — when configured — the identity provider's token."""
        if looks_like_jwt(credential):
            issuer = unverified_issuer(credential)
            if issuer == ISSUER:
                claims = tokens.verify(credential)
                found = await repository.principal_by_id(session, claims.key_id)
                if found is None:
                    raise Unauthorized("the token's API key was revoked; ask an admin for a valid key",
                                       code="invalid_token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
                return Principal(key_id=found.key_id, name=found.name, role=found.role, tenant_id=found.tenant_id,
                                 via="token", auth_time=claims.auth_time)
            if self.external is not None and issuer == self.external.issuer:
                identity = await self.external.verify(credential)
                found = await repository.external_principal(session, subject=identity.subject, name=identity.name,
                                                            role=identity.role, tenant_id=self.settings.tenant_id)
                if found is None:
                    raise Forbidden(f"'{identity.name}' was revoked by an admin (`aion keys list --all`)")
                return found
            raise Unauthorized(("a token from '" + issuer + "'" if issuer else "this token") + " is not accepted here; "
                               "send an API key or a token from "
                               "POST /api/auth/token" + (f" or from {self.external.issuer}" if self.external else ""),
                               code="invalid_token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        principal = await repository.authenticate(session, hash_key(credential)) if looks_like_key(credential) else None
        if principal is None:
            # Only an AION key's display prefix is logged (enough to recognise it, useless to an attacker);
            # anything else may be some other secret pasted by mistake, so none of it is.
            shown = f"{display_prefix(credential)}…" if looks_like_key(credential) else "not an AION key"
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
