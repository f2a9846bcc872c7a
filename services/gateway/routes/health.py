"""GET /health: is the database reachable, and what state are the chat and embeddings servers in."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.errors import AionError

from ..deps import StateDep
from ..state import GatewayState

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        database = "ok"
    except (SQLAlchemyError, OSError) as exc:
        database = f"unreachable: {type(exc).__name__}"
    embeddings = await state.inference.health()
    # One server for both unless AION_EMBEDDINGS_URL names another one.
    inference = await _chat_status(state) if state.settings.embeddings_url else embeddings
    ok = database == "ok"
    return JSONResponse({"status": "ready" if ok else "unavailable", "database": database, "inference": inference,
                         "embeddings": embeddings, "backend": state.settings.inference_backend,
                         "tenant_id": state.settings.tenant_id}, status_code=200 if ok else 503)


async def _chat_status(state: GatewayState) -> str:
    try:
        with anyio.fail_after(3):
            return str((await state.admin.health()).get("status", "unknown"))
    except (AionError, TimeoutError):
        return "unreachable"
