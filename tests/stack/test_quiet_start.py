"""A quiet, readable start: known-irrelevant library warnings are dropped where they are logged, and
under `aion up` each progress bar ends as one line of its own (carriage-return redraws resolved)."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from aion.supervisor import ConsoleLines
from shared.library_noise import KNOWN_NOISE, KNOWN_WARNINGS, silence_known_noise
from tests.fixtures.servers import REPO, base_env, free_port

# What start-up printed before (bitsandbytes on an AVX512-BF16 CPU, with the hub offline).
NOISE = ("Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
         "Failed to load CPU gemm_4bit_forward", "Download the kernel while online")
BAR = re.compile(r"\d+%\|")


# ---- carriage returns: unit ------------------------------------------------------------------------


def feed_all(lines: ConsoleLines, *pieces: str) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        out += lines.feed(piece)
    return out + lines.close()


def test_a_redrawn_bar_is_one_line_with_its_final_state() -> None:
    out = feed_all(ConsoleLines(), "INFO converting\n", "\rLoading weights:   0%|          | 0/272",
                   "\rLoading weights:  50%|#####     | 136/272", "\rLoading weights: 100%|##########| 272/272\n",
                   "INFO ready\n")
    assert out == ["INFO converting", "Loading weights: 100%|##########| 272/272", "INFO ready"]


def test_two_bars_on_one_line_become_two_lines() -> None:
    # A bar cleared instead of ended (tqdm's leave=False), then the next bar on the same line.
    out = feed_all(ConsoleLines(), "\rLoading weights:   0%|  | 0/2\rLoading weights: 100%|##| 2/2\r" + " " * 40,
                   "\rWriting model shards:   0%|  | 0/1\rWriting model shards: 100%|##| 1/1\n")
    assert out == ["Loading weights: 100%|##| 2/2", "Writing model shards: 100%|##| 1/1"]


def test_line_endings_split_across_reads_and_plain_lines_are_kept() -> None:
    out = feed_all(ConsoleLines(), "first\r", "\nsecond\n", "\n", "\r\n", "caf\u00e9 ", "au lait\n", "no newline")
    assert out == ["first", "second", "", "", "café au lait", "no newline"]


def test_a_long_bar_shows_its_progress_every_few_seconds() -> None:
    now = [0.0]
    lines = ConsoleLines(every_s=10.0, clock=lambda: now[0])
    out: list[str] = []
    for step in range(0, 101, 5):  # one redraw a second for 20 s
        now[0] = step / 5
        out += lines.feed(f"\rTraining: {step:3d}%|")
    out += lines.feed("\n")
    assert out == ["Training:  50%|", "Training: 100%|"]


# ---- known noise: unit -----------------------------------------------------------------------------


def test_the_known_messages_are_dropped_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter per logger
    for noise in KNOWN_NOISE:
        logger = logging.getLogger(noise.logger)
        assert len(logger.filters) == 1
        with caplog.at_level(logging.INFO, logger=noise.logger):
            caplog.clear()
            logger.warning("%s: Version 1 is not available in the local cache.", noise.starts_with)
            logger.warning("Something else went wrong")
        assert [r.getMessage() for r in caplog.records] == ["Something else went wrong"]


def test_the_known_python_warnings_are_ignored_and_nothing_else() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        for category, module, starts_with in KNOWN_WARNINGS:
            for message in (f"{starts_with} and will be removed in v6.", "another deprecation"):
                warnings.warn_explicit(message, category, "modeling_utils.py", 3314, module=module)
    assert [str(w.message) for w in caught] == ["another deprecation"] * len(KNOWN_WARNINGS)


# ---- `aion up`: end to end -------------------------------------------------------------------------


@pytest.mark.slow
def test_up_starts_the_inference_service_without_noise_and_one_line_per_bar() -> None:
    """The first start of the packaged model (conversion included: a fresh model cache), as a new user sees it."""
    with tempfile.TemporaryDirectory(prefix="aion-quiet-") as tmp:
        env = base_env(Path(tmp) / "data", AION_MODEL_CACHE_DIR=str(Path(tmp) / "models"))
        proc = subprocess.Popen([sys.executable, "-m", "aion", "up", "--services", "inference", "--inference-port",
                                 str(free_port()), "--grace", "10", "--timeout", "400"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        raw = bytearray()

        def read() -> None:  # bytes as written: a text-mode pipe would turn each \r into a line end
            assert proc.stdout
            while chunk := proc.stdout.read1(65536):
                raw.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 420
            while b"all services are ready" not in raw and reader.is_alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0, bytes(raw).decode(errors="replace")[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        reader.join(10)
    text = bytes(raw).decode("utf-8", "replace")
    assert "all services are ready" in text, text[-4000:]
    lines = text.split("\n")
    for noise in NOISE:
        assert noise not in text, [line for line in lines if noise in line]
    assert "\r" not in text, [line for line in lines if "\r" in line][:3]
    bars = [line for line in lines if BAR.search(line)]
    assert all(len(BAR.findall(line)) == 1 for line in bars), [line for line in bars if len(BAR.findall(line)) > 1]
    assert all(line.startswith("[inference] ") for line in bars), bars
    for name in ("Converting and de-quantizing GGUF tensors", "Loading weights", "Writing model shards"):
        shown = [line for line in bars if name in line]
        assert shown and all("100%|" in line for line in shown), (name, bars)
