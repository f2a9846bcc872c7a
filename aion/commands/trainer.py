"""`aion trainer worker` — claims and runs QLoRA training jobs from Postgres."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trainer", help="training worker")
    tsub = p.add_subparsers(dest="trainer_command", metavar="COMMAND", required=True)
    w = tsub.add_parser("worker", help="claim and run queued training jobs")
    w.add_argument("--once", action="store_true", help="run at most one job, then exit")
    w.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    import asyncio

    from shared.library_noise import silence_known_noise
    from shared.logging import configure_logging
    from trainer.settings import TrainerSettings
    from trainer.worker import serve
    from trainer.worker_settings import WorkerSettings

    silence_known_noise()  # before a job imports bitsandbytes and transformers
    settings = WorkerSettings()
    configure_logging(settings.log_level, settings.log_json)
    return asyncio.run(serve(settings, TrainerSettings(), once=args.once))
