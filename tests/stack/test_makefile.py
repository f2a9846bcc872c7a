"""The install steps `make run` and `make test` take (read with `make -n`, nothing installed): running needs
no test or browser tools, and a CPU host can take torch from a PyTorch index of its choice."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.stack.helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def planned(*args: str) -> str:
    """What make would run from a venv it has not built yet (a scratch VENV name)."""
    result = subprocess.run(["make", "-n", "VENV=.venv-not-built", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout


def test_run_installs_what_running_needs_only() -> None:
    steps = planned("run")
    assert "torch==2.13.0" in steps and '-e ".[ml]"' in steps
    assert "dev]" not in steps and "ensure_chromium" not in steps and "aion up" in steps


def test_test_adds_the_test_and_browser_tools() -> None:
    steps = planned("test")
    assert '-e ".[ml]"' in steps and '-e ".[ml,dev]"' in steps and "ensure_chromium" in steps


def test_torch_comes_from_the_index_the_host_names() -> None:
    assert "--index-url" not in planned("run")  # unset: pip's own configuration, as before
    cpu = "https://download.pytorch.org/whl/cpu"
    assert f"torch==2.13.0 --index-url {cpu}" in planned("run", f"TORCH_INDEX_URL={cpu}")
