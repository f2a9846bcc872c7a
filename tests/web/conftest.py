"""Browser tests: Debian's Chromium driven by Playwright against a real gateway on a real uvicorn.

Playwright's own browser download does not work on these machines, so it launches /usr/bin/chromium
(installed by `make install` through scripts/ensure_chromium.sh; AION_CHROMIUM names another binary).
Each test gets a fresh browser context: empty localStorage, so no API key or dev toggle leaks across.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.servers import REPO

ARTIFACTS = REPO / "test-artifacts"
TENANT = "test-tenant"
# Without the background-networking flags Chromium keeps dialling Google, and this closed network
# refuses each attempt; --no-sandbox because the tests may run as root (as they do here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    wanted = os.environ.get("AION_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: `make install` runs scripts/ensure_chromium.sh (apt-get install chromium); "
                    "it could not install it here — install Chromium and set AION_CHROMIUM to run these tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: make install")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A page in a fresh context; any uncaught script error fails the test (a broken page must not pass)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium also logs every 4xx response as a console error; the API's expected 404s are not bugs.
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.errors = errors  # type: ignore[attr-defined]  # tests that expect a failed request clear it
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page logged errors: {errors}"


def screenshot_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def screenshot(page, name: str) -> Path:
    """Full-page PNG under test-artifacts/ (git-ignored), for a person to look at."""
    path = screenshot_dir() / name
    page.screenshot(path=str(path), full_page=True)
    return path


def rows(db: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute(query, params).fetchall()
