"""Route dependencies: the caller's Principal (set by the guard), and role checks for routes that want one."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.errors import Forbidden, Unauthorized

from .middleware import principal_from_state
from .principal import Principal


def principal_of(request: Request) -> Principal:
    """Any valid key (or the local developer with AION_AUTH=off)."""
    principal = principal_from_state(request.state)
    if principal is None:
        # Only reachable from a route outside the guard's protected paths: fail closed.
        raise Unauthorized("this route needs an API key: send `Authorization: Bearer aion_...`")
    return principal


async def require_user(request: Request) -> Principal:
    return principal_of(request)


async def require_admin(principal: Annotated[Principal, Depends(require_user)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden(f"this route needs an admin key; the key '{principal.name}' has the '{principal.role}' role")
    return principal


PrincipalDep = Annotated[Principal, Depends(require_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
