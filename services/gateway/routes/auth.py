"""POST /api/auth/token: an API key (or a still-renewable token) exchanged for a short-lived signed token."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from shared.errors import BadRequest, Unauthorized

from ..auth.deps import PrincipalDep

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/token")
async def issue_token(principal: PrincipalDep, request: Request) -> dict:
    """Send the key as `Authorization: Bearer aion_...`; the answer's `access_token` then stands in for it
    until `expires_at`. Sent with a token instead, it renews that token (same session, new expiry)."""
    tokens = request.app.state.tokens
    if principal.via == "local":
        raise BadRequest("AION_AUTH=off: every local caller is admin and needs no token")
    if principal.via == "external":
        raise BadRequest("a token from the identity provider is used as it is; it needs no exchange")
    if principal.via == "token" and not tokens.renewable(principal.auth_time):
        raise Unauthorized("this session is older than AION_JWT_SESSION_MAX; exchange the API key again",
                           code="session_expired", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    issued = tokens.issue(principal, auth_time=principal.auth_time if principal.via == "token" else None)
    return {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in,
            "expires_at": datetime.fromtimestamp(issued.expires_at, UTC).isoformat(),
            "algorithm": tokens.algorithm, "key_id": str(principal.key_id), "name": principal.name,
            "role": principal.role}
