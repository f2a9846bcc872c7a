"""Shared by the knowledge-base benchmarks: a real text corpus, machine facts, and a CPU-contention meter.

The corpus is the README (long description) of every installed package that ships one in Markdown:
real technical prose, present on every machine after `make install`, no download needed.
"""

from __future__ import annotations

import email
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _site_packages() -> Path:
    return Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def package_readmes() -> list[tuple[email.message.Message, str]]:
    """(metadata, markdown README) of every installed package whose long description is Markdown, in
    metadata-file order (folder name), skipping READMEs under 2,000 characters."""
    found = []
    for meta in sorted(_site_packages().glob("*.dist-info/METADATA")):
        msg = email.message_from_bytes(meta.read_bytes())
        body = msg.get_payload()
        if not isinstance(body, str) or "markdown" not in (msg.get("Description-Content-Type") or "") or len(body) < 2000:
            continue
        found.append((msg, body))
    return found


def readme_corpus(min_chunks: int | None = None, chunk_tokens: int = 200, overlap: int = 40) -> list[tuple[str, str]]:
    """(name, markdown) of installed packages' READMEs, in name order, enough for `min_chunks` chunks."""
    from services.gateway.services.chunking import chunk_blocks
    from services.gateway.services.extract import detect_kind, extract
    from services.gateway.services.tokens import load_token_counter

    counter = load_token_counter("auto")
    docs: list[tuple[str, str]] = []
    total = 0
    for msg, body in package_readmes():
        name = f"{msg.get('Name')}.md"
        docs.append((name, body))
        ex = extract(detect_kind(name, None), body.encode(), name)
        total += len(chunk_blocks(ex.blocks, counter, max_tokens=chunk_tokens, overlap=overlap))
        if min_chunks is not None and total >= min_chunks:
            break
    return docs


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "platform": platform.platform()}


@dataclass
class CpuMeter:
    """Samples how many cores processes outside `ours` (pids, with their children) keep busy, to flag
    contended runs. Add the benchmark's services and its Postgres postmaster to `ours`."""

    ours: set[int] = field(default_factory=set)
    interval: float = 0.5
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _our_cpu(self) -> float:
        total = 0.0
        for pid in list(self.ours):
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        last_sys, last_ours = psutil.cpu_times(), self._our_cpu()
        while not self._stop.wait(self.interval):
            now_sys, now_ours = psutil.cpu_times(), self._our_cpu()
            busy = ((now_sys.user + now_sys.system + now_sys.nice) - (last_sys.user + last_sys.system + last_sys.nice))
            self.samples.append(max(0.0, busy - (now_ours - last_ours)) / self.interval)
            last_sys, last_ours = now_sys, now_ours

    def __enter__(self) -> CpuMeter:
        self.ours.add(os.getpid())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def others_cores(self) -> float:
        """Mean cores used by other processes during the run."""
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else 0.0


def say(*parts: object) -> None:
    """Progress and results on stdout (benchmarks are command-line tools; the project bans print)."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result
