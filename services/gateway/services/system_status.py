"""GET /api/status and /api/models(/detailed): what each part of the stack is, runs and uses, gathered
at once with a short timeout per part, so one part down never hides the others."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import EMBEDDING_DIM
from shared.errors import AionError
from shared.host_stats import aion_version, host_stats

from ..clients.backends import InferenceBackend
from ..clients.inference import InferenceClient
from ..repositories import adapters as adapters_repo
from ..repositories import panel
from ..settings import GatewaySettings
from .pricing import price_for

PROBE_TIMEOUT_S = 5.0
T = TypeVar("T")


async def _probe(call: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """(result, None) or (None, why it failed): a part that is down or slow is reported, not raised."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            return await call(), None
    except TimeoutError:
        return None, f"no answer within {PROBE_TIMEOUT_S:g} s"
    except AionError as exc:
        return None, exc.message
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _where(url: str) -> str:
    """scheme://host:port only: a URL's path or query may carry something private."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class SystemStatus:
    def __init__(self, settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession],
                 admin: InferenceBackend, embeddings: InferenceClient) -> None:
        self.settings = settings
        self.sessions = sessions
        self.admin = admin
        self.embeddings = embeddings
        self.started_at = time.time()

    async def status(self) -> dict[str, Any]:
        results: dict[str, Any] = {}

        async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            results[name] = await _probe(call)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "host", lambda: anyio.to_thread.run_sync(host_stats, self.settings.data_dir))
            tg.start_soon(run, "inference", self.admin.status)
            tg.start_soon(run, "database", self._database)
            tg.start_soon(run, "scheduler", self._scheduler)
            if self.settings.embeddings_url:
                tg.start_soon(run, "embeddings", self.embeddings.health)

        host, _ = results["host"]
        inference, inference_error = results["inference"]
        database, database_error = results["database"]
        scheduler, scheduler_error = results["scheduler"]
        services: dict[str, Any] = {
            "gateway": {"status": "ready", "version": aion_version(),
                        "uptime_s": round(time.time() - self.started_at, 1), "host": host},
            "inference": self._inference(inference, inference_error),
            "database": database or {"status": "unreachable", "error": database_error},
            "scheduler": scheduler or {"status": "unknown", "error": scheduler_error},
            "fallback": ({"status": "configured", "model": self.settings.fallback_model,
                          "url": _where(self.settings.fallback_url())}
                         if self.settings.fallback_enabled() else {"status": "off"}),
        }
        if "embeddings" in results:
            state, error = results["embeddings"]
            services["embeddings"] = {"status": state or "unreachable", "url": _where(self.settings.embeddings_base_url()),
                                      **({"error": error} if error else {})}
        required = ("gateway", "inference", "database")
        ok = all(services[name]["status"] == "ready" for name in required)
        return {"status": "ok" if ok else "degraded", "services": services}

    def _inference(self, status: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
        where = {"backend": self.settings.inference_backend, "url": _where(self.settings.local_llm_url)}
        if status is None:
            return {"status": "unreachable", "error": error, **where}
        health = status.get("health") or {}
        return {"status": health.get("status", "unknown"), "version": status.get("version"), **where,
                "engine": {"runner": health.get("runner"), "queue": health.get("queue"),
                           "kv_cache": health.get("kv_cache"), "device": health.get("device")},
                "host": status.get("host")}

    async def _database(self) -> dict[str, Any]:
        async with self.sessions() as session:
            versions = await panel.database_versions(session)
        return {"status": "ready", **versions}

    async def _scheduler(self) -> dict[str, Any]:
        async with self.sessions() as session:
            jobs = await panel.scheduled_jobs(session)
        if not jobs:
            return {"status": "not_started", "jobs": 0}
        now = time.time()
        overdue = any(j["next_run_time"] is not None and j["next_run_time"] < now - 300 for j in jobs)
        return {"status": "overdue" if overdue else "scheduled", "jobs": len(jobs)}

    async def models(self, tenant_id: str) -> dict[str, Any]:
        detail = await self.models_detailed(tenant_id)
        base = detail["base"]
        data: list[dict[str, Any]] = []
        if base.get("name"):
            data.append({"id": base["name"], "kind": "chat", "context_length": base.get("context_length")})
        data += [{"id": a["name"], "kind": "adapter", "parent": base.get("name"), "active": a["active"]}
                 for a in detail["adapters"] if a["loaded"]]
        if detail["embedding"].get("model"):
            data.append({"id": detail["embedding"]["model"], "kind": "embedding",
                         "dimension": detail["embedding"]["dimension"]})
        if detail["fallback"]:
            data.append({"id": detail["fallback"]["model"], "kind": "fallback"})
        return {"object": "list", "data": data}

    async def models_detailed(self, tenant_id: str) -> dict[str, Any]:
        health, error = await _probe(self.admin.health)
        health = health or {}
        async with self.sessions() as session:
            registry = await adapters_repo.list_all(session, tenant_id)
        embedding_model = health.get("embedding_model")
        if self.settings.embeddings_url or not embedding_model:
            probed, _ = await _probe(self.embeddings.probe)
            embedding_model = probed[0] if probed else embedding_model
        loaded = set(health.get("adapters") or [])
        active = health.get("adapter")
        adapters = [{"name": row["name"], "loaded": row["name"] in loaded, "active": row["name"] == active,
                     "status": row["status"], "gate": (row["metrics"] or {}).get("gate"),
                     "base_model": row["base_model"], "sha256": row["sha256"],
                     "created_at": row["created_at"], "promoted_at": row["promoted_at"]} for row in registry]
        known = {a["name"] for a in adapters}
        # Loaded without a registry row (AION_ADAPTER_DIR at start, or loaded by hand): shown, not hidden.
        adapters += [{"name": name, "loaded": True, "active": name == active, "status": "unregistered",
                      "gate": None} for name in sorted(loaded - known)]
        fallback = None
        if self.settings.fallback_enabled():
            price = price_for(self.settings.fallback_model, self.settings.fallback_prices,
                              self.settings.fallback_unknown_price)
            fallback = {"model": self.settings.fallback_model, "url": _where(self.settings.fallback_url()),
                        "usd_per_million_tokens": {"input": price.input_per_m,
                                                   "output": price.output_per_m}}
        return {
            "base": {"name": health.get("base_model"), "backend": self.settings.inference_backend,
                     "status": health.get("status", "unreachable"), "error": error or health.get("error"),
                     "quantization": health.get("quantization"), "device": health.get("device"),
                     "context_length": health.get("max_context"), "max_new_tokens": health.get("max_new_tokens"),
                     "runner": health.get("runner"), "merged": health.get("merged")},
            "adapters": adapters,
            "embedding": {"model": embedding_model, "dimension": EMBEDDING_DIM,
                          "url": _where(self.settings.embeddings_base_url())},
            "fallback": fallback,
        }
