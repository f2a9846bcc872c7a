"""The chat page's Images tab in Chromium: generate with parameters, progress while it runs, cancel, gallery,
delete — against the real gateway and a real inference service running a tiny Stable Diffusion pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.gateway.main import create_app
from services.inference.main import create_app as create_inference_app
from services.inference.settings import InferenceSettings
from tests.fixtures.postgres import truncate_all
from tests.fixtures.servers import run_asgi
from tests.gateway.conftest import gateway_settings
from tests.web.conftest import rows, screenshot

pytestmark = pytest.mark.slow

LONG_STEPS = 50_000  # a run that is cancelled long before it ends (the tiny scheduler has 100,000)


@pytest.fixture(scope="module")
def site(database_url: str, tiny_image_model, tmp_path_factory) -> Iterator[str]:
    truncate_all(database_url)
    images = create_inference_app(InferenceSettings(
        AION_DATA_DIR=str(tmp_path_factory.mktemp("inference")), AION_IMAGE_MODEL=str(tiny_image_model),
        AION_IMAGE_MAX_STEPS=str(LONG_STEPS), AION_THREADS="1"))
    with run_asgi(images, lifespan="off") as images_url:
        settings = gateway_settings(database_url, images_url, AION_IMAGE_MAX_STEPS=str(LONG_STEPS),
                                    AION_IMAGES_DIR=str(tmp_path_factory.mktemp("images")))
        with run_asgi(create_app(settings)) as url:
            yield url
    images.state.inference.images.close()


def fill_form(page, prompt: str, steps: int, seed: str = "") -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Negative prompt").fill("blurry")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Steps").fill(str(steps))
    page.get_by_label("Seed").fill(seed)


def test_generate_watch_progress_cancel_and_delete(page, site, database_url) -> None:
    page.goto(site + "/")
    page.get_by_role("tab", name="Images").click()
    assert page.locator("#images-panel").is_visible() and not page.locator("#chat-panel").is_visible()
    page.wait_for_selector("#img-count:has-text('(0)')")

    fill_form(page, "a lighthouse at dusk", steps=2, seed="42")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#img-status:has-text('Done in')", timeout=180_000)
    item = page.locator("#gallery li").first
    item.locator("img[src^='data:image/png']").wait_for()
    assert page.evaluate("() => document.querySelector('#gallery img').naturalWidth") == 64
    assert "a lighthouse at dusk" in item.inner_text() and "seed 42" in item.inner_text()
    assert "not: blurry" in item.inner_text()
    screenshot(page, "images-tab-gallery.png")

    # A long run: the bar follows the steps, Cancel stops it, nothing is added.
    fill_form(page, "a very slow sunrise", steps=LONG_STEPS)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#img-status:has-text('Step ')", timeout=180_000)
    page.wait_for_function("() => document.getElementById('img-progress').value >= 1")
    assert page.locator("#img-progress").get_attribute("max") == str(LONG_STEPS)
    screenshot(page, "images-tab-progress.png")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_selector("#img-status:has-text('Cancelled')")
    assert page.get_by_role("button", name="Generate").is_enabled()
    assert page.locator("#gallery li").count() == 1
    page.errors.clear()  # the browser logs the cancelled request's 409

    # The tab survives a reload (#images) and the gallery comes from the server.
    page.reload()
    page.wait_for_selector("#gallery li img[src^='data:image/png']")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete image: a lighthouse at dusk").click()
    page.wait_for_selector("#img-count:has-text('(0)')")
    assert rows(database_url, "SELECT count(*) FROM images") == [(0,)]
    page.get_by_role("tab", name="Chat").click()
    assert page.locator("#chat-panel").is_visible() and not page.locator("#images-panel").is_visible()
