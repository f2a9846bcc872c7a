"""The GPU check's CPU dry run: the same code as on an NVIDIA machine (bench/gpu_check.py), on a tiny
random Qwen2, so that the check is known to work before a GPU is lent to run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO, base_env

pytestmark = pytest.mark.slow


def test_the_dry_run_serves_trains_reloads_and_merges(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out),
                          "--work", str(tmp_path / "work")], cwd=REPO, env=base_env(tmp_path),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True
    for phase in ("nf4", "full"):
        assert [r["streams"] for r in report[phase]] == [1, 2, 4]
        assert all(r["tokens"] == r["streams"] * 8 and r["tokens_per_s"] > 0 for r in report[phase])
    assert report["qlora"]["steps"] == 2 and report["qlora"]["quantization"] == "nf4"
    assert report["qlora"]["gate"]["decision"] in ("promote", "reject")
    adapter = report["adapter"]
    assert adapter["adapter_1_stream"]["tokens"] == 8 and adapter["adapter_and_base_mixed"]["tokens"] == 16
    assert adapter["merge_status"] == 200 and adapter["health_after_merge"]["merged"] is True
    assert "merged: gpu-check-v1" in adapter["health_after_merge"]["quantization"]
    assert adapter["after_merge_1_stream"]["tokens"] == 8 and adapter["base_after_merge_status"] == 409
