"""`aion trainer worker`: claim queued jobs, train, gate, register, promote — progress on the job row.

The heavy work (load, train, evaluate) runs in a thread; the event loop beats the job's heartbeat
and writes progress. A worker that dies stops beating: another worker (or this one restarted)
re-queues the job once, then fails it. Nothing half-written is ever registered or served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.clients.backends import InferenceBackend, make_backend
from services.gateway.repositories import adapters as adapters_repo
from services.gateway.repositories import jobs as jobs_repo
from services.gateway.services import promotion
from services.gateway.services.export import Exporter
from shared.db import make_async_engine, make_session_factory
from shared.db.migrate import upgrade

from .settings import TrainerSettings
from .worker_settings import WorkerSettings

logger = logging.getLogger(__name__)

# Job params (API names) → trainer settings fields.
_OVERRIDES = {"learning_rate": "learning_rate", "epochs": "epochs", "max_steps": "max_steps",
              "lora_r": "lora_r", "batch_size": "batch_size"}


class JobCancelled(Exception):
    pass


class TooFewExamples(Exception):
    pass


def job_settings(base: TrainerSettings, params: dict[str, Any]) -> TrainerSettings:
    update = {field: params[key] for key, field in _OVERRIDES.items() if params.get(key) is not None}
    if "epochs" in update:
        update["epochs"] = max(1, round(float(update["epochs"])))
    return base.model_copy(update=update)


class Worker:
    def __init__(self, settings: WorkerSettings, trainer_settings: TrainerSettings,
                 sessions: async_sessionmaker[AsyncSession], admin: InferenceBackend) -> None:
        self.settings = settings
        self.trainer_settings = trainer_settings
        self.sessions = sessions
        self.admin = admin
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    async def recover(self) -> None:
        async with self.sessions.begin() as session:
            touched = await jobs_repo.recover_stale(session, self.settings.stale_after_s, self.settings.max_attempts)
        for job_id in touched:
            logger.warning("job %s had a dead worker; re-queued or failed", job_id)

    async def run_once(self) -> dict[str, Any] | None:
        """Recover dead jobs, claim one, run it. Returns the finished job row, or None when idle."""
        await self.recover()
        async with self.sessions.begin() as session:
            job = await jobs_repo.claim_next(session, self.name)
        if job is None:
            return None
        logger.info("claimed training job %s (attempt %s)", job["id"], job["attempts"])
        await self._run(job)
        async with self.sessions() as session:
            return await jobs_repo.get(session, job["tenant_id"], job["id"])

    async def serve(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.run_once() is None:
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_s)
            except TimeoutError:
                continue
            except Exception:
                logger.exception("worker loop error; retrying")
                await asyncio.sleep(self.settings.poll_s)

    # -- one job -------------------------------------------------------------------------------
    async def _beat(self, job_id: uuid.UUID, progress: dict | None = None, line: str | None = None) -> str:
        async with self.sessions.begin() as session:
            return await jobs_repo.heartbeat(session, job_id, progress=progress, log_line=line)

    async def _finish(self, job_id: uuid.UUID, status: str, *, metrics: dict | None = None,
                      error: str | None = None, adapter_name: str | None = None) -> None:
        async with self.sessions.begin() as session:
            await jobs_repo.finish(session, job_id, status=status, metrics=metrics, error=error,
                                   adapter_name=adapter_name)

    async def _dataset(self, job: dict[str, Any]) -> Path:
        if job["dataset_path"] and Path(job["dataset_path"]).is_file():
            return Path(job["dataset_path"])
        out = self.settings.root() / "datasets" / f"job-{job['id']}.jsonl"
        result = await Exporter(self.sessions, self.settings.selection_policy()).export(
            tenant_id=job["tenant_id"], out=out, days=int(job["params"].get("days", 30)), trigger="manual")
        async with self.sessions.begin() as session:
            await jobs_repo.set_dataset(session, job["id"], str(out), result.window_end)
        await self._beat(job["id"], line=f"exported {result.rows} examples to {out} (skipped {result.skipped})")
        return out

    async def _run(self, job: dict[str, Any]) -> None:
        job_id, tenant = job["id"], job["tenant_id"]
        beating = True

        async def heartbeat_loop() -> None:
            while beating:
                await asyncio.sleep(self.settings.heartbeat_s)
                if beating:
                    await self._beat(job_id)

        beat_task = asyncio.create_task(heartbeat_loop())
        try:
            dataset = await self._dataset(job)
            async with self.sessions() as session:
                current = await adapters_repo.active(session, tenant)
            # One folder per attempt: a re-queued job never collides with what a dead attempt left.
            out_dir = self.settings.adapters_root() / f"job-{job_id}-a{job['attempts']}"
            settings = job_settings(self.trainer_settings, job["params"])
            # Continue from the active adapter (nightly datasets hold only the new examples) unless
            # the job asks for a fresh run from the base weights.
            resume = Path(current["path"]) if current and not job["params"].get("fresh") else None
            status_box = {"status": "running"}

            def progress(step: int, total: int, loss: float) -> None:
                status_box["status"] = anyio.from_thread.run(
                    self._beat, job_id, {"step": step, "total": total, "loss": round(loss, 4)},
                    f"step {step}/{total} loss {loss:.4f}")

            def cancelled() -> bool:
                return status_box["status"] == "cancelled"

            train_result, gate = await anyio.to_thread.run_sync(
                _train_and_gate, settings, dataset, out_dir, progress, cancelled,
                Path(current["path"]) if current else None, resume)
            metrics = {"train": train_result, "gate": gate, "dataset": str(dataset)}
            if await self._beat(job_id, line=f"gate: {gate['decision']}") != "running":
                logger.info("job %s was cancelled during evaluation; its candidate is not registered", job_id)
                return
            name = await self._register(job, out_dir, gate, metrics)
            if gate["decision"] != "promote":
                await self._finish(job_id, "rejected", metrics=metrics, adapter_name=name,
                                   error="; ".join(gate["reasons"]) or "the evaluation gate rejected the candidate")
                return
            try:
                await promotion.activate(self.sessions, self.admin, tenant_id=tenant, name=name,
                                         active_link=self.settings.active_adapter_link())
            except Exception as exc:
                await self._finish(job_id, "failed", metrics=metrics, adapter_name=name,
                                   error=f"trained and passed the gate, but promotion failed: {exc}")
                return
            await self._finish(job_id, "succeeded", metrics=metrics, adapter_name=name)
            await self._release_old_adapters(tenant)
        except JobCancelled:
            logger.info("job %s cancelled", job_id)
        except TooFewExamples as exc:
            logger.warning("job %s not run: %s", job_id, exc)
            await self._finish(job_id, "failed", error=str(exc))
        except Exception as exc:
            if type(exc).__name__ == "TrainingCancelled":
                logger.info("job %s cancelled during training", job_id)
            else:
                logger.exception("training job %s failed", job_id)
                await self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            beating = False
            beat_task.cancel()

    async def _release_old_adapters(self, tenant: str) -> None:
        """Unload and delete old adapters; a failure here never undoes the promotion that just happened."""
        try:
            await promotion.release_old_adapters(self.sessions, self.admin, tenant_id=tenant,
                                                 keep_on_disk=self.settings.adapter_keep,
                                                 adapters_root=self.settings.adapters_root())
        except Exception:
            logger.warning("could not release old adapters after the promotion", exc_info=True)

    async def _register(self, job: dict[str, Any], out_dir: Path, gate: dict, metrics: dict) -> str:
        status = "candidate" if gate["decision"] == "promote" else "rejected"
        for _ in range(5):  # two workers finishing at once may race for the same version number
            try:
                async with self.sessions.begin() as session:
                    name = await adapters_repo.next_version_name(session, job["tenant_id"])
                    await adapters_repo.register(
                        session, tenant_id=job["tenant_id"], name=name, path=str(out_dir),
                        base_model=self.trainer_settings.lora_base, sha256=None, status=status,
                        metrics=metrics, job_id=job["id"])
                (out_dir / promotion.ADAPTER_NAME_FILE).write_text(json.dumps({"name": name}))
                return name
            except IntegrityError:
                continue
        raise RuntimeError("could not allocate an adapter version name")


def _train_and_gate(settings: TrainerSettings, dataset_path: Path, out_dir: Path, progress: Any, cancelled: Any,
                    current_adapter: Path | None, resume_from: Path | None) -> tuple[dict, dict]:
    """Load, size the settings to the model, build, train, evaluate — all in the worker thread."""
    from .base_model import load_base
    from .model_size import count_parameters
    from .precision import release_memory

    base = None
    try:
        base = load_base(settings)
        sized = settings.for_model(count_parameters(base.model))
        return _train_and_gate_loaded(base, sized, dataset_path, out_dir, progress, cancelled, current_adapter,
                                      resume_from)
    finally:
        base = None
        release_memory()  # the next job (or inference on the same GPU) gets the memory back


def _train_and_gate_loaded(base: Any, settings: TrainerSettings, dataset_path: Path, out_dir: Path, progress: Any,
                           cancelled: Any, current_adapter: Path | None, resume_from: Path | None) -> tuple[dict, dict]:
    from .data_builder import build_dataset
    from .evaluate import evaluate_candidate
    from .run_lora import train_adapter

    dataset = build_dataset([dataset_path], base.tokenizer, settings)
    own = len(dataset.train) - dataset.replay_rows + len(dataset.heldout)
    if own < settings.min_examples:
        raise TooFewExamples(f"{own} usable examples in {dataset_path.name} ({dataset.rows_read} rows read); a job "
                             f"needs at least {settings.min_examples} (AION_TRAIN_MIN_EXAMPLES): log more answers, "
                             "widen `days`, or lower the setting")
    result = train_adapter(base, dataset, out_dir, settings, progress=progress, should_cancel=cancelled,
                           resume_from=resume_from)
    gate = evaluate_candidate(base, out_dir, dataset.heldout, settings, current_adapter=current_adapter)
    sizes = {k: getattr(settings, k) for k in ("learning_rate", "eval_batch_size", "max_seq_len")}
    return {**result.to_dict(), "dataset": dataset.summary(), "sized": sizes}, gate.to_dict()


async def serve(settings: WorkerSettings, trainer_settings: TrainerSettings, once: bool = False) -> int:
    import signal

    from .run_lora import remove_partial_adapters

    # A worker killed mid-save leaves a hidden half folder; it is never registered, so sweep it.
    remove_partial_adapters(settings.adapters_root())
    url = await anyio.to_thread.run_sync(settings.resolve_database_url)
    await anyio.to_thread.run_sync(upgrade, url)
    engine = make_async_engine(url, pool_size=2, max_overflow=2)
    admin = make_backend(settings.inference_backend, settings.local_llm_url, settings.inference_token, timeout_s=300)
    worker = Worker(settings, trainer_settings, make_session_factory(engine), admin)
    try:
        if once:
            job = await worker.run_once()
            return 0 if job is None or job["status"] in ("succeeded", "rejected") else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logger.info("trainer worker %s polling for jobs", worker.name)
        await worker.serve(stop)
        return 0
    finally:
        await admin.close()
        await engine.dispose()
        await anyio.to_thread.run_sync(settings.release_database)
