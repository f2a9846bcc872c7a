"""Typed dependencies: routes receive settings, a unit-of-work session, the inference client, the tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from .auth.deps import PrincipalDep
from .clients.inference import InferenceClient
from .settings import GatewaySettings
from .state import GatewayState


# Dependencies are `async def` even when they only read a value: FastAPI runs a plain `def` dependency
# in a worker thread, a hop that cost ~2 ms of every request.
async def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_gateway_settings(state: StateDep) -> GatewaySettings:
    return state.settings


SettingsDep = Annotated[GatewaySettings, Depends(get_gateway_settings)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: commit when the route returns, roll back when it raises."""
    async with state.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": the commit happens before the response is sent, so a failed commit is reported
# to the client instead of after it was told "ok".
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_inference(state: StateDep) -> InferenceClient:
    return state.inference


InferenceDep = Annotated[InferenceClient, Depends(get_inference)]


async def get_tenant(principal: PrincipalDep) -> str:
    """The tenant of this request: the API key's (PRIMARY_TENANT_ID with AION_AUTH=off); never the body."""
    return principal.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
