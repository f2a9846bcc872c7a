"""Which model answers a conversation: the server's default, the base weights, or one adapter version.

A choice is a name. `default` (stored as NULL) is whatever the server serves by default — the active
adapter, else the base — so it follows promotions; `base` pins the base weights; an adapter's registry
name pins that version. Only adapters the registry can still serve are offered and accepted: not
rejected by the gate, files not pruned.

The name sent to the model server is resolved per request. An adapter version the server no longer
holds (an older one, unloaded after a promotion) is loaded again from its registry folder by the chat
client's `restore` hook on the first request that names it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import AionError, BadRequest

from ..clients.backends import InferenceBackend
from ..repositories import adapters as repo

logger = logging.getLogger(__name__)

DEFAULT = "default"
BASE = "base"

BaseNameFn = Callable[[], Awaitable[str]]


class UnknownModel(BadRequest):
    code = "unknown_model"


def servable(row: dict[str, Any]) -> bool:
    return row["status"] != "rejected" and row["pruned_at"] is None


class ModelChoices:
    # The base model's name is asked of the model server; a restart may serve another one.
    BASE_TTL_S = 300.0

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: InferenceBackend, tenant_id: str,
                 base_name: BaseNameFn | None = None) -> None:
        self.sessions = sessions
        self.backend = backend
        self.tenant_id = tenant_id  # whose registry `restore` loads from (the gateway serves one tenant)
        self._base_name = base_name or self._health_base_name
        self._base: tuple[float, str] | None = None

    async def _health_base_name(self) -> str:
        name = (await self.backend.health()).get("base_model")
        if not name:
            raise AionError("the model server does not name its base model", status_code=503,
                            code="base_model_unknown")
        return str(name)

    async def base_name(self) -> str:
        """The name the model server gives its base weights (asked once, then kept a while)."""
        now = time.monotonic()
        if self._base is None or now - self._base[0] > self.BASE_TTL_S:
            self._base = (now, await self._base_name())
        return self._base[1]

    async def _base_or_none(self) -> str | None:
        try:
            return await self.base_name()
        except Exception as exc:  # the options list still shows the choice, unnamed
            logger.info("could not read the base model's name: %s", exc)
            return None

    async def options(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every choice a conversation may make, the server's default first, adapters newest first."""
        async with self.sessions() as session:
            rows = [r for r in await repo.list_all(session, tenant_id) if servable(r)]
        base = await self._base_or_none()
        active = next((r["name"] for r in rows if r["status"] == "active"), None)
        return [{"id": DEFAULT, "kind": "default", "serves": active or base, "status": None, "created_at": None},
                {"id": BASE, "kind": "base", "serves": base, "status": None, "created_at": None},
                *({"id": r["name"], "kind": "adapter", "serves": r["name"], "status": r["status"],
                   "created_at": r["created_at"]} for r in rows)]

    async def check(self, tenant_id: str, choice: str | None) -> str | None:
        """The choice as a conversation stores it (None: the default); UnknownModel (400) when it is none."""
        if choice in (None, "", DEFAULT):
            return None
        if choice == BASE:
            return BASE
        async with self.sessions() as session:
            rows = await repo.list_all(session, tenant_id)
        if any(r["name"] == choice and servable(r) for r in rows):
            return choice
        names = ", ".join(r["name"] for r in rows if servable(r)) or "none registered"
        raise UnknownModel(f"model '{choice}' is not one this gateway answers with; choose '{DEFAULT}', "
                           f"'{BASE}' or a registered adapter ({names}); GET /api/ai/chat/options lists them",
                           param="model")

    async def resolve(self, stored: str | None) -> str | None:
        """The model name to send for a stored choice (None: the chat client's own default)."""
        if stored is None:
            return None
        return await self.base_name() if stored == BASE else stored

    async def restore(self, model: str) -> bool:
        """Load a registered adapter the model server does not hold (answered 404); True when it now does."""
        async with self.sessions() as session:
            adapter = await repo.get(session, self.tenant_id, model)
        if adapter is None or not servable(adapter) or not Path(adapter["path"]).is_dir():
            return False
        logger.info("loading adapter %s from %s for a conversation that chose it", model, adapter["path"])
        await self.backend.load(adapter["path"], model, activate=False)
        return True
