"""GET /api/status (every service's health, version and resources) and the models behind the answers."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import StateDep, TenantDep

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/status")
async def status(state: StateDep) -> dict:
    """CPU, memory, the data dir's disk and GPUs of the gateway's and the inference service's hosts; the
    engine's queue, running rows and KV memory; the database, scheduler, embeddings and fallback."""
    return await state.system.status()


@router.get("/models")
async def models(state: StateDep, tenant: TenantDep) -> dict:
    """The base model, its loaded adapters, the embedding model and the fallback, one line each."""
    return await state.system.models(tenant)


@router.get("/models/detailed")
async def models_detailed(state: StateDep, tenant: TenantDep) -> dict:
    """Base model (quantization, context length, device, runner), every registered or loaded adapter with
    its gate numbers, the embedding model and its dimension, the fallback and its price."""
    return await state.system.models_detailed(tenant)
