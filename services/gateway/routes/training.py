"""Training jobs, the adapter registry, and the seed's panel proxies to the inference service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import AionError, Conflict, NotFound

from ..deps import SessionDep, StateDep, TenantDep
from ..repositories import adapters as adapters_repo
from ..repositories import jobs as jobs_repo
from ..services import promotion
from ..services.served_model import backend_health

router = APIRouter()


class TrainStart(BaseModel):
    """Optional overrides of the trainer's hyper-parameters for this job."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=30, ge=1, le=3650, description="export window when no dataset is given")
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    epochs: float | None = Field(default=None, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=100_000)
    lora_r: int | None = Field(default=None, ge=1, le=256)
    batch_size: int | None = Field(default=None, ge=1, le=256)
    fresh: bool = Field(default=False, description="train from the base weights instead of continuing the "
                        "active adapter (lora_r applies only to fresh runs)")


def _job_public(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, "id": str(job["id"])}


@router.post("/api/ai/train/lora/start", status_code=202)
async def start_training(session: SessionDep, tenant: TenantDep, body: TrainStart | None = None) -> dict:
    body = body or TrainStart()
    running = await jobs_repo.active_job(session, tenant)
    if running is not None:
        raise Conflict(f"training job {running['id']} is already {running['status']}; wait for it or cancel it")
    params = body.model_dump(exclude_none=True)
    job_id = await jobs_repo.create(session, tenant_id=tenant, params=params, trigger="manual")
    return {"ok": True, "id": str(job_id), "status": "queued"}


@router.get("/api/ai/train/lora/status")
async def training_status(session: SessionDep, tenant: TenantDep,
                          id: Annotated[uuid.UUID | None, Query(description="job id; latest when omitted")] = None
                          ) -> dict:  # noqa: A002
    job = await (jobs_repo.get(session, tenant, id) if id else jobs_repo.latest(session, tenant))
    if job is None:
        raise NotFound(f"no training job {id}" if id else "no training job yet; POST /api/ai/train/lora/start")
    return _job_public(job)


@router.get("/api/ai/train/lora/jobs")
async def training_history(session: SessionDep, tenant: TenantDep) -> dict:
    return {"jobs": [_job_public(j) for j in await jobs_repo.history(session, tenant)]}


@router.post("/api/ai/train/lora/{job_id}/cancel")
async def cancel_training(job_id: uuid.UUID, session: SessionDep, tenant: TenantDep) -> dict:
    if await jobs_repo.cancel(session, tenant, job_id) is None:
        raise Conflict(f"job {job_id} is not queued or running (or does not exist)")
    return {"ok": True, "id": str(job_id), "status": "cancelled"}


@router.get("/api/ai/adapters")
async def list_adapters(state: StateDep, session: SessionDep, tenant: TenantDep) -> dict:
    registry = await adapters_repo.list_all(session, tenant)
    figures = await adapters_repo.serving_figures(session, tenant)
    for row in registry:
        row["id"], row["job_id"] = str(row["id"]), str(row["job_id"]) if row["job_id"] else None
        # What happened after promotion, beside the gate's verdict (metrics.gate) that let it in.
        row["serving"] = figures.get(row["name"], {"answers_served": 0, "thumbs_up": 0, "thumbs_down": 0,
                                                    "answers_while_active": 0, "fallback_rate": None})
    return {"adapters": registry}


async def _release(state: Any, tenant: str) -> dict:
    """Unload old adapters after a switch; the switch stands even when this fails."""
    try:
        return await promotion.release_old_adapters(state.sessions, state.admin, tenant_id=tenant)
    except AionError as exc:
        return {"error": exc.message}


@router.post("/api/ai/adapters/{name}/activate")
async def activate_adapter(name: str, state: StateDep, tenant: TenantDep) -> dict:
    """Serve `name` by default (also a rollback to any earlier version)."""
    out = await promotion.activate(state.sessions, state.admin, tenant_id=tenant, name=name,
                                   active_link=state.settings.active_adapter_link())
    out["released"] = await _release(state, tenant)
    return out


@router.post("/api/ai/adapters/deactivate")
async def deactivate_adapters(state: StateDep, tenant: TenantDep) -> dict:
    """Serve the base model again."""
    out = await promotion.deactivate(state.sessions, state.admin, tenant_id=tenant,
                                     active_link=state.settings.active_adapter_link())
    out["released"] = await _release(state, tenant)
    return out


@router.get("/api/ai/llm/health")
async def llm_health(state: StateDep, tenant: TenantDep) -> dict:
    return await backend_health(state.sessions, state.admin, tenant)


@router.post("/api/ai/llm/adapter/reload")
async def llm_adapter_reload(state: StateDep) -> dict:
    """The seed's panel button: reload AION_ADAPTER_DIR in the inference service."""
    result = await state.admin.reload_default()
    await state.chat.cache.clear(state.settings.tenant_id)  # other weights answer from now on
    return result


@router.post("/api/ai/llm/adapter/merge")
async def llm_adapter_merge(state: StateDep) -> dict:
    result = await state.admin.merge()
    await state.chat.cache.clear(state.settings.tenant_id)
    return result
