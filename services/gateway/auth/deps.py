"""Route dependencies: the caller's Principal (set by the guard, which also checks the role a route needs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.errors import Unauthorized

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


PrincipalDep = Annotated[Principal, Depends(require_user)]
