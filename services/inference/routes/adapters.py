"""Adapter routes: reload (versioned, validated), activate, unload, merge, list."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends

from shared.errors import BadRequest

from ..adapters import check_adapter
from ..deps import ReadyDep, require_token
from ..protocol import AdapterActivateRequest, AdapterReloadRequest

router = APIRouter(dependencies=[Depends(require_token)])


def _sync_metrics(state: ReadyDep) -> None:
    assert state.adapters is not None
    state.metrics.adapter_active.clear()
    current = state.adapters.active or (state.adapters.merged.name if state.adapters.merged else None)
    if current:
        state.metrics.adapter_active.labels(adapter=current).set(1)


@router.get("/adapters")
async def list_adapters(state: ReadyDep) -> dict:
    assert state.adapters is not None and state.engine is not None
    return {**state.adapters.public(), "base_model": state.base_name,
            "in_use": state.engine.adapters_in_use()}


@router.post("/adapter/reload")
async def reload_adapter(state: ReadyDep, body: AdapterReloadRequest | None = None) -> dict:
    """Load an adapter without a restart. A bad one is refused (4xx) and the current one keeps serving."""
    body = body or AdapterReloadRequest()
    assert state.adapters is not None and state.engine is not None
    folder = body.path or (str(state.settings.adapter_dir) if state.settings.adapter_dir else None)
    if not folder:
        raise BadRequest("no adapter path given and AION_ADAPTER_DIR is not set")
    path = Path(folder).expanduser()
    # Read and check the files off the event loop and off the engine thread: only the swap is ordered.
    checked = await anyio.to_thread.run_sync(check_adapter, path, state.engine.runner.model)
    adapters = state.adapters
    name = body.name or adapters.default_name_for(path, checked.sha256)
    info = await asyncio.wrap_future(state.engine.run_op(lambda: adapters.load(checked, name, body.activate)))
    _sync_metrics(state)
    return {"ok": True, "adapter": info.public(), "active": adapters.active}


@router.post("/adapter/activate")
async def activate_adapter(body: AdapterActivateRequest, state: ReadyDep) -> dict:
    assert state.adapters is not None and state.engine is not None
    adapters = state.adapters
    await asyncio.wrap_future(state.engine.run_op(lambda: adapters.activate(body.name)))
    _sync_metrics(state)
    return {"ok": True, "active": adapters.active}


@router.delete("/adapters/{name}")
async def unload_adapter(name: str, state: ReadyDep) -> dict:
    assert state.adapters is not None and state.engine is not None
    adapters, engine = state.adapters, state.engine
    await asyncio.wrap_future(engine.run_op(lambda: adapters.unload(name, engine.adapters_in_use())))
    return {"ok": True, "unloaded": name}


@router.post("/adapter/merge")
async def merge_adapter(state: ReadyDep) -> dict:
    """Fold the active adapter into the base; waits for running requests to finish first."""
    assert state.adapters is not None and state.engine is not None
    info = await asyncio.wrap_future(state.engine.run_op(state.merge_active, barrier=True))
    _sync_metrics(state)
    return {"ok": True, "merged": info.name, "quantization": state.quantization}
