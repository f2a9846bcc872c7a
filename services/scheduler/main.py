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

from shared.db import make_async_engine, make_session_factory, make_sync_engine
from shared.db.migrate import upgrade

from .jobs import NIGHTLY_JOB, nightly_export
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
    scheduler.resume()
    job = scheduler.get_job(NIGHTLY_JOB)
    logger.info("scheduler running: next nightly export at %s", job.next_run_time if job else "?")
    await stop.wait()
    scheduler.shutdown(wait=True)
    await _RUNTIME["engine"].dispose()  # type: ignore[attr-defined]
    await asyncio.to_thread(settings.release_database)
