"""`aion scheduler`: APScheduler with its job store in Postgres.

A missed run (process down at the time) runs once when the scheduler comes back (no grace limit,
coalesced). APScheduler 3 does not coordinate several schedulers sharing a store, so each run first
claims its slot in `scheduler_runs`: two scheduler processes never run the same slot twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from shared.db import make_async_engine, make_session_factory, make_sync_engine
from shared.db.migrate import upgrade

from .jobs import NIGHTLY_JOB, WEB_REFRESH_JOB, nightly_export, refresh_web_pages
from .settings import SchedulerSettings

logger = logging.getLogger(__name__)

_RUNTIME: dict[str, object] = {}  # the job function is stored by reference; it finds its collaborators here


def cron_trigger(settings: SchedulerSettings) -> CronTrigger:
    """Standard 5-field crontab; a 6th leading field gives seconds (handy for tests and demos)."""
    fields = settings.export_cron.split()
    try:
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow,
                               timezone=settings.timezone)
        return CronTrigger.from_crontab(settings.export_cron, timezone=settings.timezone)
    except ValueError as exc:
        raise SystemExit(f"AION_EXPORT_CRON={settings.export_cron!r} is not a crontab expression: {exc}") from exc


def slot_for(trigger: BaseTrigger, now: datetime) -> datetime:
    """The latest fire time at or before `now`: the slot a (possibly late) run belongs to."""
    lookback = timedelta(seconds=1)
    while lookback < timedelta(days=800):
        slot = trigger.get_next_fire_time(None, now - lookback)
        if slot is not None and slot <= now:
            while True:
                following = trigger.get_next_fire_time(slot, slot + timedelta(microseconds=1))
                if following is None or following > now:
                    return slot
                slot = following
        lookback *= 2
    return now


async def run_nightly_job() -> None:
    """Entry point APScheduler calls (by reference, so it survives in the persistent store)."""
    settings: SchedulerSettings = _RUNTIME["settings"]  # type: ignore[assignment]
    trigger: BaseTrigger = _RUNTIME["trigger"]  # type: ignore[assignment]
    slot = slot_for(trigger, datetime.now(UTC))
    await nightly_export(_RUNTIME["sessions"], settings, slot)  # type: ignore[arg-type]


async def run_web_refresh_job() -> None:
    """Entry point for the web-page refresh (by reference, like the nightly job)."""
    web = _RUNTIME.get("web")
    if web is None:
        web = _RUNTIME["web"] = await asyncio.to_thread(_build_web_ingestor)
    await refresh_web_pages(_RUNTIME["sessions"], web)  # type: ignore[arg-type]


def _build_web_ingestor():
    """The gateway's own fetcher and ingestion, from the same AION_* variables the gateway reads."""
    import httpx

    from services.gateway.clients.inference import InferenceClient
    from services.gateway.extras_setup import build_web
    from services.gateway.services.tokens import load_token_counter
    from services.gateway.settings import GatewaySettings
    from shared.db import EMBEDDING_DIM

    gateway = GatewaySettings()
    http = httpx.AsyncClient(timeout=httpx.Timeout(gateway.inference_timeout_s, connect=5.0))
    inference = InferenceClient(http, gateway.local_llm_url, token=gateway.inference_token,
                                batch_size=gateway.embed_batch_size, expected_dim=EMBEDDING_DIM)
    return build_web(gateway, inference, load_token_counter(gateway.tokenizer))


def ensure_web_refresh_job(scheduler: AsyncIOScheduler, settings: SchedulerSettings) -> None:
    if settings.web_refresh_minutes == 0:
        if scheduler.get_job(WEB_REFRESH_JOB):
            scheduler.remove_job(WEB_REFRESH_JOB)
        return
    scheduler.add_job(run_web_refresh_job, IntervalTrigger(minutes=settings.web_refresh_minutes),
                      id=WEB_REFRESH_JOB, name="re-fetch web pages on their cadence", replace_existing=True)


def build_scheduler(settings: SchedulerSettings, url: str, trigger: BaseTrigger | None = None) -> AsyncIOScheduler:
    trigger = trigger or cron_trigger(settings)
    engine = make_async_engine(url, pool_size=2, max_overflow=2)
    _RUNTIME.update(settings=settings, trigger=trigger, sessions=make_session_factory(engine), engine=engine)
    store = SQLAlchemyJobStore(engine=make_sync_engine(url), tablename="apscheduler_jobs")
    scheduler = AsyncIOScheduler(jobstores={"default": store}, timezone=settings.timezone,
                                 job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1})
    return scheduler


def ensure_nightly_job(scheduler: AsyncIOScheduler, trigger: BaseTrigger) -> None:
    """Keep a stored job (and its overdue next run, if the process was down); add it the first time."""
    job = scheduler.get_job(NIGHTLY_JOB)
    if job is None:
        scheduler.add_job(run_nightly_job, trigger, id=NIGHTLY_JOB, name="nightly export + retrain trigger")
    elif str(job.trigger) != str(trigger):
        scheduler.reschedule_job(NIGHTLY_JOB, trigger=trigger)  # the schedule setting changed


async def serve(settings: SchedulerSettings, trigger: BaseTrigger | None = None) -> None:
    url = await asyncio.to_thread(settings.resolve_database_url)
    await asyncio.to_thread(upgrade, url)
    trigger = trigger or cron_trigger(settings)
    scheduler = build_scheduler(settings, url, trigger)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scheduler.start(paused=True)
    ensure_nightly_job(scheduler, trigger)
    ensure_web_refresh_job(scheduler, settings)
    scheduler.resume()
    job = scheduler.get_job(NIGHTLY_JOB)
    logger.info("scheduler running: next nightly export at %s", job.next_run_time if job else "?")
    await stop.wait()
    scheduler.shutdown(wait=True)
    web = _RUNTIME.pop("web", None)
    if web is not None:
        await web.fetcher.aclose()  # type: ignore[attr-defined]
        await web.inference.http.aclose()  # type: ignore[attr-defined]
    await _RUNTIME["engine"].dispose()  # type: ignore[attr-defined]
    await asyncio.to_thread(settings.release_database)
