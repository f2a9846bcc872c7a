"""Promotion and rollback: an adapter serves by default only after the inference service loaded it and
a smoke generation on it succeeded; a rejected candidate is never served."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import Conflict, NotFound

from ..clients.backends import InferenceBackend
from ..clients.inference_admin import InferenceAdminError
from ..repositories import adapters as repo
from .response_cache import forget_answers

logger = logging.getLogger(__name__)

ADAPTER_NAME_FILE = "aion_adapter.json"  # lets a restarted inference service serve it under the same name


def point_active_link(link: Path, target: Path) -> None:
    """Swap the `active` symlink atomically, so AION_ADAPTER_DIR always names a whole adapter."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target.resolve(), tmp)
    os.replace(tmp, link)


async def activate(session_factory: async_sessionmaker[AsyncSession], admin: InferenceBackend, *, tenant_id: str,
                   name: str, active_link: Path | None) -> dict:
    """Load (if needed), smoke-test, then make `name` the adapter served by default."""
    async with session_factory() as session:
        adapter = await repo.get(session, tenant_id, name)
    if adapter is None:
        raise NotFound(f"adapter '{name}' is not in the registry; see GET /api/ai/adapters")
    if adapter["status"] == "rejected":
        raise Conflict(f"adapter '{name}' was rejected by the evaluation gate and is never served")
    if not Path(adapter["path"]).is_dir():
        raise Conflict(f"adapter '{name}' has no files at {adapter['path']} any more")
    await admin.load(adapter["path"], name, activate=False)
    await admin.smoke(name)
    await admin.activate(name)
    async with session_factory.begin() as session:
        await repo.make_active(session, tenant_id, name)
        await forget_answers(session, tenant_id)  # after the switch: see forget_answers
    if active_link is not None:
        point_active_link(active_link, Path(adapter["path"]))
    logger.info("adapter %s is now active", name)
    return {"ok": True, "active": name}


async def deactivate(session_factory: async_sessionmaker[AsyncSession], admin: InferenceBackend, *,
                     tenant_id: str, active_link: Path | None) -> dict:
    """Serve the base weights again."""
    await admin.activate(None)
    async with session_factory.begin() as session:
        await repo.deactivate_all(session, tenant_id)
        await forget_answers(session, tenant_id)
    if active_link is not None and active_link.is_symlink():
        active_link.unlink()
    return {"ok": True, "active": None}


async def release_old_adapters(session_factory: async_sessionmaker[AsyncSession], admin: InferenceBackend, *,
                               tenant_id: str, keep_on_disk: int | None = None,
                               adapters_root: Path | None = None) -> dict[str, list[str]]:
    """After a promotion or rollback: unload from the inference service every adapter that is neither
    the active one nor its rollback target (memory would grow every night otherwise) and, with
    `keep_on_disk`, delete the folders of all but the newest N registered adapters under `adapters_root`.

    Best effort: an adapter still serving a request stays loaded until the next promotion.
    """
    async with session_factory() as session:
        active = await repo.active(session, tenant_id)
        previous = await repo.rollback_target(session, tenant_id)
        registry = await repo.list_all(session, tenant_id)  # newest first
    keep = {a["name"] for a in (active, previous) if a is not None}
    unloaded: list[str] = []
    loaded = (await admin.adapters()).get("adapters") or []
    for name in [a["name"] for a in loaded if a["name"] not in keep]:
        try:
            await admin.unload(name)
            unloaded.append(name)
        except InferenceAdminError as exc:
            logger.warning("adapter %s stays loaded for now: %s", name, exc.message)
    pruned: list[str] = []
    if keep_on_disk is not None and adapters_root is not None:
        root = adapters_root.resolve()
        for row in registry[keep_on_disk:]:
            path = Path(row["path"]).resolve()
            # Only folders this trainer wrote: never anything outside its adapters root.
            if row["name"] in keep or row["pruned_at"] is not None or root not in path.parents:
                continue
            shutil.rmtree(path, ignore_errors=True)
            async with session_factory.begin() as session:
                await repo.mark_pruned(session, tenant_id, row["name"])
            pruned.append(row["name"])
    if unloaded or pruned:
        logger.info("released adapters: unloaded %s, deleted folders of %s", unloaded, pruned)
    return {"unloaded": unloaded, "pruned": pruned}
