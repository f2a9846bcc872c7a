"""Which model name the gateway's chat requests carry when vLLM serves chat.

AION's inference service keeps a default adapter of its own, so the gateway sends its configured
name (`AION_LOCAL_MODEL`) and the service answers with whatever it serves by default. vLLM has no
such default: a request names the base or one loaded adapter. So on vLLM the registry's active
adapter (Postgres, written by promotion and rollback) is the name sent, read per request so that
every gateway replica follows a promotion at once; with none active, the base model's name.

vLLM forgets adapters loaded at run time when it restarts. A request that names one it lost is
answered 404; `restore` loads the adapter again from the registry so the request can be retried.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..clients.backends import InferenceBackend
from ..clients.vllm_admin import VllmAdmin
from ..repositories import adapters as repo

logger = logging.getLogger(__name__)


class ServedModel:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: VllmAdmin, tenant_id: str,
                 base_name: str | None = None) -> None:
        self.sessions = sessions
        self.backend = backend
        self.tenant_id = tenant_id
        # AION_LOCAL_MODEL when set; else asked of vLLM once (its --served-model-name or --model path).
        self._base = base_name

    async def base(self) -> str:
        if self._base is None:
            self._base = await self.backend.base_model()
        return self._base

    async def current(self) -> str:
        async with self.sessions() as session:
            active = await repo.active(session, self.tenant_id)
        return active["name"] if active else await self.base()

    async def restore(self, model: str) -> bool:
        """Load `model` into vLLM again if it is a registered, servable adapter; True when it now is."""
        async with self.sessions() as session:
            adapter = await repo.get(session, self.tenant_id, model)
        if adapter is None or adapter["status"] == "rejected" or not Path(adapter["path"]).is_dir():
            return False
        logger.warning("vLLM no longer holds adapter %s (restarted?); loading it again from %s", model,
                       adapter["path"])
        await self.backend.load(adapter["path"], model, activate=False)
        return True


async def backend_health(sessions: async_sessionmaker[AsyncSession], backend: InferenceBackend,
                         tenant_id: str) -> dict[str, Any]:
    """The chat backend's health for the admin panel, the same keys on both backends. vLLM has no
    default adapter: the one requests are sent to is the registry's active one."""
    health = await backend.health()
    if health.get("backend") == "vllm":
        async with sessions() as session:
            active = await repo.active(session, tenant_id)
        health["adapter"] = active["name"] if active else None
        health["adapter_loaded"] = bool(active and active["name"] in (health.get("adapters") or []))
    return health
