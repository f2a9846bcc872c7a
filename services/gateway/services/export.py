"""Logged answers → training JSONL: window, feedback filter, de-duplication, PII scrub, atomic write.

Used by the API route, `aion export` and the scheduler's nightly job. Each run is recorded with its
watermark, so the nightly job exports only what is new.
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

ExportFormat = Literal["chat", "seed"]


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


def _row(fmt: ExportFormat, system_prompt: str, question: str, reply: str, meta: dict) -> dict:
    if fmt == "seed":
        return {"kind": "answer", "meta": {"prompt": question, "reply": reply, **meta}}
    return {"messages": [{"role": "system", "content": system_prompt},
                         {"role": "user", "content": question},
                         {"role": "assistant", "content": reply}], "meta": meta}


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
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], system_prompt: str) -> None:
        self.session_factory = session_factory
        self.system_prompt = system_prompt

    async def collect(self, *, tenant_id: str, days: int | None = None, fmt: ExportFormat = "chat",
                      trigger: Literal["manual", "nightly"] = "manual", now: datetime | None = None
                      ) -> tuple[list[dict], ExportResult]:
        """The rows an export would write (filtered, de-duplicated, scrubbed), and its figures."""
        end = now or datetime.now(UTC)
        async with self.session_factory() as session:
            start = end - timedelta(days=days or 1)
            if trigger == "nightly":
                # Incremental: everything after the last nightly watermark (first run: the last `days`).
                start = await repo.last_watermark(session, tenant_id, "nightly") or start
            answers = await repo.answers_between(session, tenant_id, start, end)
            ids = [a.request_id for a in answers if a.request_id]
            negative = await repo.negatively_rated(session, tenant_id, ids)

        skipped = {"incomplete": 0, "negative_feedback": 0, "duplicate": 0, "empty": 0}
        seen: set[str] = set()
        rows: list[dict] = []
        for answer in answers:
            meta = answer.meta
            question, reply = (meta.get("prompt") or "").strip(), (meta.get("reply") or "").strip()
            if meta.get("complete") is False or (answer.value is not None and answer.value <= 0):
                skipped["incomplete"] += 1
                continue
            if answer.request_id in negative:
                skipped["negative_feedback"] += 1
                continue
            if not question or not reply:
                skipped["empty"] += 1
                continue
            question, reply = scrub(question), scrub(reply)
            key = hashlib.sha256(f"{question}\x00{reply}".encode()).hexdigest()
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(key)
            rows.append(_row(fmt, self.system_prompt, question, reply, {
                "request_id": answer.request_id, "created_at": answer.created_at.isoformat(),
                "used": meta.get("used"), "model": meta.get("model"), "C": meta.get("C")}))
        watermark = answers[-1].created_at if answers else (start if trigger == "nightly" else None)
        return rows, ExportResult(path=Path(), rows=len(rows), window_start=start, window_end=end,
                                  watermark=watermark, skipped=skipped)

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
