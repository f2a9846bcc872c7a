"""Fixtures for the stack checks: the compose file, the Dockerfiles, `.env.example` and `aion up`."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.stack.helpers import COMPOSE_FILE


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "network: asks the package index (pypi.org) for metadata; skipped when it is unreachable")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]
