"""`aion scheduler` — nightly export and the retrain trigger (APScheduler, job store in Postgres)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="run the nightly export + retrain trigger")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from services.scheduler.main import serve
    from services.scheduler.settings import SchedulerSettings
    from shared.logging import configure_logging

    settings = SchedulerSettings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(serve(settings))
    return 0
