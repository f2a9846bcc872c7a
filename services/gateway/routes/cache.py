"""The response cache for the admin panel: hit rate and money saved, and clearing it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import StateDep, TenantDep

router = APIRouter(prefix="/api/ai/cache", tags=["cache"])


@router.get("")
async def cache_stats(state: StateDep, tenant: TenantDep,
                      days: Annotated[int, Query(ge=1, le=366, description="answers of the last N days")] = 30
                      ) -> dict:
    """Answers served from the cache (per level) among all complete answers, and what they saved."""
    return await state.chat.cache.stats(tenant, days)


@router.delete("")
async def clear_cache(state: StateDep, tenant: TenantDep) -> dict:
    """Forget every cached answer of this tenant, in every gateway replica."""
    generation = await state.chat.cache.clear(tenant)
    return {"ok": True, "cache_generation": generation}
