"""Scheduled jobs: the nightly export (of what the active adapter has not learned yet) and retrain trigger
(fewer examples than a job needs: nothing is consumed, the rows come again the next night), and
re-fetching web pages on their cadence."""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.repositories import jobs as jobs_repo
from services.gateway.services.export import Exporter
from services.gateway.services.webpages import WebIngestor

from .settings import SchedulerSettings

logger = logging.getLogger(__name__)

NIGHTLY_JOB = "nightly_export"


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def claim_slot(sessions: async_sessionmaker[AsyncSession], job: str, slot: datetime) -> bool:
    """True for exactly one caller per (job, slot), whichever scheduler process gets there first."""
    async with sessions.begin() as session:
        row = (await session.execute(text("""
            INSERT INTO scheduler_runs (job, slot, owner) VALUES (:j, :s, :o)
            ON CONFLICT (job, slot) DO NOTHING RETURNING job
        """), {"j": job, "s": slot, "o": owner_name()})).first()
    return row is not None


async def finish_slot(sessions: async_sessionmaker[AsyncSession], job: str, slot: datetime, status: str,
                      detail: dict) -> None:
    async with sessions.begin() as session:
        await session.execute(text("""
            UPDATE scheduler_runs SET status = :st, detail = CAST(:d AS jsonb), finished_at = now()
            WHERE job = :j AND slot = :s
        """), {"j": job, "s": slot, "st": status, "d": json.dumps(detail, default=str)})


async def nightly_export(sessions: async_sessionmaker[AsyncSession], settings: SchedulerSettings,
                         slot: datetime) -> dict | None:
    """Run once per slot: incremental export, then a training job if there are enough new examples."""
    if not await claim_slot(sessions, NIGHTLY_JOB, slot):
        logger.info("nightly export for %s already ran elsewhere; skipping", slot.isoformat())
        return None
    detail: dict = {"slot": slot.isoformat()}
    try:
        out = settings.exports_dir() / f"nightly-{slot.strftime('%Y%m%dT%H%M%S')}.jsonl"
        result = await Exporter(sessions, settings.selection_policy(), max_days=settings.export_days).export(
            tenant_id=settings.tenant_id, out=out, trigger="nightly")
        detail.update(rows=result.rows, path=str(result.path), skipped=result.skipped,
                      since=result.window_start.isoformat())
        if result.rows >= settings.train_min_examples:
            async with sessions.begin() as session:
                if await jobs_repo.active_job(session, settings.tenant_id) is None:
                    job_id = await jobs_repo.create(session, tenant_id=settings.tenant_id, params={},
                                                    trigger="nightly", dataset_path=str(result.path),
                                                    data_until=result.window_end)
                    detail["training_job"] = str(job_id)
                else:
                    detail["training_job"] = "skipped: a job is already queued or running"
        else:
            detail["training_job"] = (f"skipped: {result.rows} new examples, "
                                      f"{settings.train_min_examples} needed (AION_TRAIN_MIN_EXAMPLES)")
        await finish_slot(sessions, NIGHTLY_JOB, slot, "succeeded", detail)
        logger.info("nightly export: %s", detail)
        return detail
    except Exception as exc:
        detail["error"] = f"{type(exc).__name__}: {exc}"
        await finish_slot(sessions, NIGHTLY_JOB, slot, "failed", detail)
        logger.exception("nightly export failed")
        return detail


WEB_REFRESH_JOB = "web_pages_refresh"


async def refresh_web_pages(sessions: async_sessionmaker[AsyncSession], web: WebIngestor) -> dict:
    """Re-fetch the web pages whose cadence is due (ETag / Last-Modified, so unchanged ones cost a 304)."""
    results = await web.refresh_due(sessions)
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    if results:
        logger.info("web pages refreshed: %s", counts)
    return counts
