"""With AION_AUTH=on the pages ask for an API key on 401/403, exchange it for a short-lived signed token
(the key itself is never kept in the browser) and send the token on every call: a `user` key chats and
reads documents, only an `admin` key runs the panel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from services.gateway.auth import repository
from services.gateway.auth.keys import generate_key
from services.gateway.main import create_app
from shared.db import make_async_engine, make_session_factory
from tests.fixtures.postgres import truncate_all
from tests.fixtures.servers import free_port, run_asgi
from tests.gateway.conftest import gateway_settings
from tests.web.conftest import TENANT

pytestmark = pytest.mark.slow


def create_key(db: str, role: str) -> str:
    """A key in the database, made by the repository `aion keys create` uses; returns the secret."""
    async def create() -> str:
        engine = make_async_engine(db, pool_size=1)
        try:
            new_key = generate_key()
            async with make_session_factory(engine)() as session:
                await repository.create(session, name=f"web-{role}", role=role, tenant_id=TENANT, new_key=new_key)
                await session.commit()
            return new_key.key
        finally:
            await engine.dispose()
    # Playwright's sync API keeps an event loop running in this thread: run ours in another one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


@pytest.fixture(scope="module")
def secure_site(database_url: str) -> Iterator[str]:
    truncate_all(database_url)
    # No model is needed to check keys: a closed port stands in for the inference service.
    settings = gateway_settings(database_url, f"http://127.0.0.1:{free_port()}", AION_AUTH="on")
    with run_asgi(create_app(settings)) as url:
        yield url


def save_key(page, key: str) -> None:
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Save key").click()


def test_pages_ask_for_a_key_and_send_it(page, secure_site, database_url, tmp_path: Path) -> None:
    user_key, admin_key = create_key(database_url, "user"), create_key(database_url, "admin")

    page.goto(secure_site + "/")
    box = page.locator("#key-box")
    box.get_by_text("asks for an API key").wait_for()
    assert page.locator("#docs-error").is_visible()

    save_key(page, user_key)
    page.get_by_text("No documents yet").wait_for()
    assert box.is_hidden() and not page.locator("#docs-error").is_visible()
    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert user_key not in stored and page.locator("#key-input").input_value() == ""
    token = page.evaluate("JSON.parse(localStorage.getItem('aion.token')).token")
    assert jwt.decode(token, options={"verify_signature": False})["role"] == "user"

    # Uploading needs an admin key: the page says so instead of failing silently.
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nA short note.\n", encoding="utf-8")
    page.set_input_files("#file-input", str(note))
    page.locator(".upload.bad .result", has_text="admin key").wait_for()
    box.get_by_text("An admin key is needed").wait_for()

    # The panel with the user key: refused; with the admin key: it loads.
    page.goto(secure_site + "/admin")
    box.get_by_text("An admin key is needed").wait_for()
    save_key(page, admin_key)
    page.locator("#budget-stats", has_text="$5.00").wait_for()
    page.locator("#h-database .state-text", has_text="ok").wait_for()
    assert box.is_hidden()

    box.evaluate("b => b.hidden = false")
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("localStorage.getItem('aion.token')") is None


def test_a_raw_key_an_older_page_kept_becomes_a_token(page, secure_site, database_url) -> None:
    user_key = create_key(database_url, "user")
    page.goto(secure_site + "/")
    page.evaluate("k => localStorage.setItem('aion.apiKey', k)", user_key)
    page.reload()
    page.get_by_text("No documents yet").wait_for()
    assert page.evaluate("localStorage.getItem('aion.apiKey')") is None
    assert page.evaluate("localStorage.getItem('aion.token')")
