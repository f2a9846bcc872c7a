"""Logged answers → grounded training JSONL: window, selection policy, de-duplication, PII scrub, atomic write.

A row is exactly what the model was given (system, kept history, the RAG message with its numbered
passages) followed by its reply, which is the only training target. Used by the API route,
`aion export`, the scheduler's nightly job and the trainer. Each run is recorded in `export_runs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import AionError

from ..repositories import exports as repo
from .pii import scrub
from .selection import EVAL_REQUEST_PREFIX, SelectionPolicy, skip_reason

ExportFormat = Literal["chat", "seed"]
SKIP_REASONS = ("incomplete", "cut_off", "negative_feedback", "fallback_excluded", "local_excluded",
                "local_unrated", "too_large", "ungrounded", "empty", "not_found_with_context", "low_support",
                "untrusted_history", "duplicate", "cached", "evaluation")


class ExportFailed(AionError):
    status_code = 503
    code = "export_failed"


@dataclass
class ExportResult:
    path: Path
    rows: int
    window_start: datetime
    window_end: datetime
    watermark: datetime | None
    skipped: dict[str, int] = field(default_factory=dict)


def reply_digest(text: str) -> str:
    """How a reply is recognised when a caller sends it back as history (see replies_written_by_aion)."""
    return hashlib.sha256(text.strip(" \t\r\n").encode("utf-8")).hexdigest()


def _history_digests(messages: list[dict[str, str]]) -> list[str]:
    """Digests of the assistant turns before the question: context the caller sent, never a target."""
    return [reply_digest(m["content"]) for m in messages[:-1] if m.get("role") == "assistant"]


def _row(fmt: ExportFormat, messages: list[dict[str, str]], reply: str, meta: dict) -> dict:
    """A grounded row: exactly what the model was given, then its reply (the only training target)."""
    if fmt == "seed":
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        turns = [m for m in messages if m["role"] != "system"]
        return {"kind": "answer", "meta": {"prompt": turns[-1]["content"], "reply": reply, "system": system,
                                           "history": turns[:-1], **meta}}
    return {"messages": [*messages, {"role": "assistant", "content": reply}], "meta": meta}


def write_jsonl_atomically(path: Path, rows: list[dict]) -> None:
    """Write next to the target and rename: a crash or a full disk never leaves a half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Exporter:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession],
                 policy: SelectionPolicy | None = None, *, max_days: int = 30) -> None:
        self.session_factory = session_factory
        self.policy = policy or SelectionPolicy()
        self.max_days = max_days  # how far back a nightly dataset reaches at most

    async def collect(self, *, tenant_id: str, days: int | None = None, fmt: ExportFormat = "chat",
                      trigger: Literal["manual", "nightly"] = "manual", now: datetime | None = None
                      ) -> tuple[list[dict], ExportResult]:
        """The rows an export would write (selected, de-duplicated, scrubbed), and its figures.

        Manual: the last `days` days. Nightly: every answer the active adapter was not trained on
        (after its job's data window; at most `max_days` back), so a night with too few rows to
        train carries them to the next one.
        """
        end = now or datetime.now(UTC)
        async with self.session_factory() as session:
            if trigger == "nightly":
                floor = end - timedelta(days=self.max_days)
                trained = await repo.trained_until(session, tenant_id)
                start = max(trained, floor) if trained is not None else floor
            else:
                start = end - timedelta(days=days or 1)
            answers = await repo.answers_between(session, tenant_id, start, end)
            ratings = await repo.latest_ratings(session, tenant_id, [a.request_id for a in answers if a.request_id])
            history = {d for a in answers for d in _history_digests(a.meta.get("messages") or [])}
            trusted = await repo.replies_written_by_aion(session, tenant_id, sorted(history))

        skipped = dict.fromkeys(SKIP_REASONS, 0)
        seen: set[str] = set()
        rows: list[dict] = []
        for answer in answers:
            meta = answer.meta
            reason = skip_reason(meta, answer.value, ratings.get(answer.request_id or ""), self.policy)
            if (answer.request_id or "").startswith(EVAL_REQUEST_PREFIX):
                reason = "evaluation"  # `aion eval` measures the models; its answers are not the owner's
            messages = meta.get("messages") or []
            if reason is None and not set(_history_digests(messages)) <= trusted:
                reason = "untrusted_history"  # a forged assistant turn would steer the reply we train on
            if reason is not None:
                skipped[reason] += 1
                continue
            messages = [{"role": m["role"], "content": scrub(m["content"])} for m in messages]
            reply = scrub(meta["reply"].strip())
            key = hashlib.sha256(json.dumps([messages, reply], ensure_ascii=False).encode()).hexdigest()
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(key)
            rows.append(_row(fmt, messages, reply, {
                "request_id": answer.request_id, "created_at": answer.created_at.isoformat(),
                "used": meta.get("used"), "model": meta.get("model"), "C": meta.get("C"),
                "prompt_version": meta.get("prompt_version"), "chunk_ids": meta.get("chunk_ids"),
                "question": scrub(meta.get("prompt") or ""), "rating": ratings.get(answer.request_id or "")}))
        watermark = answers[-1].created_at if answers else None
        return rows, ExportResult(path=Path(), rows=len(rows), window_start=start, window_end=end,
                                  watermark=watermark, skipped={k: v for k, v in skipped.items() if v})

    async def record(self, tenant_id: str, fmt: ExportFormat, trigger: str, result: ExportResult,
                     path: str | None, error: str | None = None) -> None:
        async with self.session_factory.begin() as session:
            await repo.record_run(session, tenant_id=tenant_id, trigger=trigger, fmt=fmt,
                                  window_start=result.window_start, window_end=result.window_end,
                                  watermark=result.watermark if error is None else None,
                                  rows=0 if error else result.rows, skipped=result.skipped, path=path,
                                  status="failed" if error else "succeeded", error=error)

    async def export(self, *, tenant_id: str, out: Path, days: int | None = None, fmt: ExportFormat = "chat",
                     trigger: Literal["manual", "nightly"] = "manual", now: datetime | None = None) -> ExportResult:
        """Collect, write to `out` atomically, and record the run (a failed write keeps the old file)."""
        rows, result = await self.collect(tenant_id=tenant_id, days=days, fmt=fmt, trigger=trigger, now=now)
        error: str | None = None
        try:
            write_jsonl_atomically(out, rows)
        except OSError as exc:
            error = f"cannot write the export to {out}: {exc.strerror or exc}; check the path and free space"
        await self.record(tenant_id, fmt, trigger, result, str(out), error)
        if error:
            raise ExportFailed(error)
        result.path = out
        return result
