"""GET /health: is the database reachable, and what state is the inference service in."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        database = "ok"
    except (SQLAlchemyError, OSError) as exc:
        database = f"unreachable: {type(exc).__name__}"
    inference = await state.inference.health()
    ok = database == "ok"
    return JSONResponse({"status": "ready" if ok else "unavailable", "database": database, "inference": inference,
                         "tenant_id": state.settings.tenant_id}, status_code=200 if ok else 503)
