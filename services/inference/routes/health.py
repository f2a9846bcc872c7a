from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from shared.host_stats import aion_version, host_stats

from ..deps import StateDep, require_token

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict:
    """Answers while loading too (`status: loading`); generation routes answer 503 until `ready`."""
    return state.health()


@router.get("/status", dependencies=[Depends(require_token)])
async def status(state: StateDep) -> dict:
    """/health plus this host's CPU, memory, disk of the data dir and GPUs (for the gateway's /api/status)."""
    host = await anyio.to_thread.run_sync(host_stats, state.settings.data_dir)
    return {"version": aion_version(), "health": state.health(), "host": host}


@router.get("/metrics", dependencies=[Depends(require_token)])
async def metrics(state: StateDep) -> Response:
    if state.engine:
        stats = state.engine.stats()
        state.metrics.queue_depth.set(stats.waiting)
        state.metrics.running.set(stats.running)
        # Reset first: an adapter nobody uses any more must drop out, not keep its last count.
        state.metrics.adapter_sequences.clear()
        for adapter, count in stats.adapters_in_use.items():
            state.metrics.adapter_sequences.labels(adapter=adapter).set(count)
        prefix = state.engine.runner.prefix_cache.stats()
        state.metrics.prefix_hit_tokens.set(prefix.hit_tokens)
        state.metrics.prefix_lookup_tokens.set(prefix.prompt_tokens)
        state.metrics.prefix_bytes.set(prefix.bytes)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
