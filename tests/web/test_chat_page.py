"""The chat page in Chromium: streamed answers from the real model with sources and a badge, citations
that link to their passage, follow-ups that carry the conversation, stop, feedback, documents."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gateway.main import create_app
from tests.fixtures.openai_standin import REPLY, StandIn, run_standin
from tests.fixtures.postgres import truncate_all
from tests.fixtures.servers import run_asgi
from tests.gateway.conftest import gateway_settings, kb_files
from tests.web.conftest import rows, screenshot

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the roof vents of the greenhouse open?"

# Counts text updates of answers as they happen, to tell a stream from one late block of text.
COUNT_UPDATES = """() => {
  window.__updates = 0;
  new MutationObserver((records) => {
    for (const r of records) if (r.target.closest && r.target.closest('.msg.assistant .text')) window.__updates++;
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with run_standin() as server:
        yield server


@pytest.fixture(scope="module")
def site(database_url: str, inference_url: str, standin: StandIn) -> Iterator[str]:
    """One gateway for the module: the real model answers locally, the stand-in is the paid fallback."""
    truncate_all(database_url)
    settings = gateway_settings(
        database_url, inference_url, AION_LOCAL_MAX_TOKENS=96, AION_LOCAL_TEMPERATURE=0,
        # The corpus matches the test questions at C ≈ 0.5-0.7: a lower τ keeps them on the local model.
        AION_TAU_CONFIDENCE=0.3,
        AION_FALLBACK_BASE_URL=standin.url, AION_FALLBACK_MODEL="ok", OPENAI_API_KEY="test-key",
        AION_BUDGET_USD=5.0, AION_FALLBACK_SHARE_MIN_ANSWERS=1000,
        # The page's mechanics, not the support check (tests/chat/test_trust.py), are under test here.
        AION_SUPPORT_THRESHOLD=0)
    with run_asgi(create_app(settings)) as url:
        r = httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=180)
        assert r.status_code in (200, 201), r.text
        yield url


def ask(page, text: str) -> None:
    page.get_by_label("Your question").fill(text)
    page.get_by_label("Your question").press("Enter")


def last_answer(page):
    return page.locator(".msg.assistant").last


def wait_answered(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        " return m && !m.hasAttribute('aria-busy'); }", timeout=timeout_ms)


def answer_rows(db: str) -> list[dict]:
    return [{"request_id": r[0], **r[1]} for r in rows(
        db, "SELECT request_id, meta FROM ai_events WHERE kind = 'answer' ORDER BY created_at")]


def test_question_streams_from_the_local_model_with_sources_and_badge(page, site, database_url) -> None:
    page.goto(site + "/")
    page.wait_for_selector("#doc-list .doc")
    page.evaluate(COUNT_UPDATES)
    ask(page, QUESTION)
    msg = last_answer(page)
    # Text shows while the answer is still streaming, and grows in many steps.
    page.wait_for_function("() => { const m = document.querySelector('.msg.assistant');"
                           " return m.hasAttribute('aria-busy') && m.querySelector('.text').textContent.length > 0; }")
    wait_answered(page)
    assert page.evaluate("window.__updates") >= 5

    text = msg.locator(".text").inner_text()
    assert len(text.strip()) > 10
    badge = msg.locator(".badge")
    assert badge.inner_text().startswith("local")
    scores = msg.locator(".conf").inner_text()
    assert "retrieval match 0." in scores and "answer support " in scores
    sources = msg.locator(".sources li.source")
    assert sources.count() >= 1
    assert "Greenhouse" in sources.first.inner_text() and "27 °C" in msg.locator(".sources").inner_text()
    assert msg.locator(".feedback button").count() == 2
    assert not msg.locator(".warnings li").count()

    request_id = msg.get_attribute("data-request-id")
    logged = [a for a in answer_rows(database_url) if a["request_id"] == request_id]
    assert len(logged) == 1 and logged[0]["used"] == "local" and logged[0]["complete"] is True
    assert logged[0]["reply"].strip() == text.strip()

    # Thumbs up: a feedback event that points at this answer.
    msg.get_by_role("button", name="Helpful (thumbs up)").click()
    page.get_by_text("Thanks — recorded.").wait_for()
    assert msg.get_by_role("button", name="Helpful (thumbs up)").get_attribute("aria-pressed") == "true"
    feedback = rows(database_url, "SELECT value, meta FROM ai_events WHERE kind = 'feedback'")
    assert [(v, m["answer_request_id"], m["rating"]) for v, m in feedback] == [(1.0, request_id, "up")]
    screenshot(page, "chat.png")


def test_fallback_citations_link_to_sources_and_follow_ups_carry_history(page, site, standin) -> None:
    # The dev toggle lives on the admin page and applies to this browser's chat page.
    page.goto(site + "/admin")
    page.get_by_label("Force fallback").check()
    page.get_by_label("Use my own τ").check()
    page.get_by_label("τ (confidence threshold)").press("End")  # keyboard: the slider to 1.00
    page.get_by_text("now sends τ 1.00 and force fallback").wait_for()
    page.goto(site + "/")
    page.get_by_text("Dev toggles on: τ = 1.00, force fallback").wait_for()

    standin.calls.clear()
    ask(page, QUESTION)
    wait_answered(page)
    msg = last_answer(page)
    assert msg.locator(".badge").inner_text().startswith("fallback")
    assert msg.locator(".text").inner_text() == REPLY  # accents and all
    assert standin.calls[-1]["model"] == "ok"
    # "[1]" in the text became links to passage 1 of this answer's sources.
    cite = msg.locator("a.cite").first
    assert cite.inner_text() == "[1]"
    cite.click()
    focused = page.evaluate("document.activeElement.id")
    assert focused.endswith("-src-1")
    assert "Greenhouse" in page.locator(f"#{focused}").inner_text()
    # τ 1.00 is above any confidence: the warning says so in words.
    assert "Low confidence" in msg.locator(".warnings").inner_text()

    ask(page, "And when do they close?")
    wait_answered(page)
    sent = standin.calls[-1]["messages"]
    contents = [m["content"] for m in sent]
    assert any(QUESTION in c for c in contents[:-1]), sent  # the first question rides along as history
    assert any(REPLY.split(" [1]")[0] in c for c in contents[:-1]), sent
    assert "And when do they close?" in contents[-1]
    assert page.locator(".msg.user").count() == 2

    # The server keeps the conversation: a reload shows it again, and the next question continues it.
    page.reload()
    page.locator(".msg.assistant").nth(1).wait_for()
    assert page.locator(".msg.user").count() == 2
    assert page.locator(".msg.assistant").first.locator(".text").inner_text() == REPLY
    assert page.locator(".msg.assistant").first.locator(".badge").inner_text().startswith("fallback")


def test_stop_cancels_the_stream_and_the_generation(page, site, database_url) -> None:
    page.goto(site + "/")
    before = {a["request_id"] for a in answer_rows(database_url)}
    ask(page, "Explain how the sourdough starter is fed and kept.")
    page.wait_for_function("() => (document.querySelector('.msg.assistant .text') || {}).textContent?.length > 0")
    page.get_by_role("button", name="Stop").click()
    msg = last_answer(page)
    msg.get_by_text("Stopped: the generation was cancelled").wait_for()
    assert msg.locator(".badge").inner_text() == "stopped"
    assert page.get_by_role("button", name="Stop").is_disabled()
    assert page.get_by_role("button", name="Send").is_enabled()
    frozen = msg.locator(".text").inner_text()
    # The gateway saw the client go and logged the answer as unfinished (the local generation was cancelled).
    deadline = time.monotonic() + 30
    new: list[dict] = []
    while time.monotonic() < deadline and not new:
        new = [a for a in answer_rows(database_url) if a["request_id"] not in before]
        time.sleep(0.3)
    assert len(new) == 1 and new[0]["complete"] is False and new[0]["used"] == "local", new
    assert msg.locator(".text").inner_text() == frozen


def test_upload_by_picker_and_drop_then_delete(page, site, tmp_path: Path) -> None:
    page.goto(site + "/")
    page.wait_for_selector("#doc-list .doc")
    note = tmp_path / "beehive-notes.md"
    note.write_text("# Beehive notes\n\nThe bees are checked every Sunday morning; the queen is marked blue.\n",
                    encoding="utf-8")
    page.set_input_files("#file-input", str(note))
    row = page.locator(".upload", has_text="beehive-notes.md")
    row.locator(".result", has_text="added").wait_for()
    assert "added · 1 chunk" in row.locator(".result").inner_text()
    assert row.locator("progress").evaluate("p => p.value") == 1
    page.locator("#doc-list .doc", has_text="beehive-notes.md").wait_for()

    # Drag and drop, with a type the gateway refuses: the reason shows beside the file.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['MZ binary'], 'tool.exe', {type: 'application/octet-stream'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    refused = page.locator(".upload", has_text="tool.exe").locator(".result")
    refused.filter(has_text="refused").wait_for()
    assert "unsupported file type" in refused.inner_text()
    assert page.locator(".upload.bad", has_text="tool.exe").count() == 1

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete beehive-notes.md").click()
    page.locator("#doc-list .doc", has_text="beehive-notes.md").wait_for(state="detached")
    listed = httpx.get(f"{site}/api/ai/documents").json()
    assert "beehive-notes.md" not in json.dumps(listed) and listed["total"] == 4

    # A phone-sized screen: one column, nothing cut off sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "chat-mobile.png")


def sse_body(*events: tuple[str, dict]) -> str:
    """Frames as sse-starlette writes them (CRLF line ends)."""
    return "".join(f"event: {name}\r\ndata: {json.dumps(data, ensure_ascii=False)}\r\n\r\n" for name, data in events)


SOURCE = {"n": 1, "document": "d", "chunk": "c", "title": "Greenhouse operations",
          "page_or_heading": "Greenhouse operations > Temperature and ventilation", "score": 0.8,
          "text": "The roof vents open automatically when the inside temperature passes 27 °C."}


def test_a_local_stream_that_breaks_is_replaced_by_the_fallback_text(page, site) -> None:
    """The gateway's `warn` with `restart: true` (shape from tests/chat/test_stream.py) clears the partial
    text; an `error` event is shown as such. The stream route is answered by the test, the page is real."""
    streams = [
        sse_body(("sources", {"sources": [SOURCE], "C": 0.71}), ("token", {"text": "Half an ans"}),
                 ("warn", {"reason": "local_unavailable", "message": "the local model failed: connection reset",
                           "restart": True}),
                 ("token", {"text": "Vents open at 27 °C "}), ("token", {"text": "[1]."}),
                 ("done", {"used": "fallback", "model": "gpt-4o-mini", "C": 0.71, "request_id": "r1",
                           "warnings": ["local_unavailable"], "latency_ms": 10, "usage": {}})),
        sse_body(("sources", {"sources": [], "C": 0.1}),
                 ("error", {"message": "the local model failed: down; no fallback: budget spent", "request_id": "r2"})),
    ]
    page.route("**/api/ai/chat/stream", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream; charset=utf-8"}, body=streams.pop(0)))
    page.goto(site + "/")
    ask(page, QUESTION)
    wait_answered(page)
    msg = last_answer(page)
    assert msg.locator(".text").inner_text() == "Vents open at 27 °C [1]."
    warnings = msg.locator(".warnings").inner_text()
    assert "local model is unavailable (the local model failed: connection reset)" in warnings
    assert "partial text was discarded" in warnings
    assert msg.locator(".badge").inner_text().startswith("fallback")
    assert msg.locator(".source .where").inner_text() == " — Temperature and ventilation"

    ask(page, "Something else?")
    wait_answered(page)
    failed = last_answer(page)
    failed.get_by_role("alert").filter(has_text="No answer: the local model failed: down").wait_for()
    assert failed.locator(".badge").inner_text() == "failed" and failed.locator(".feedback").is_hidden()


def test_pages_and_static_files_are_served_with_a_strict_policy(site) -> None:
    page_response = httpx.get(f"{site}/")
    assert page_response.status_code == 200 and page_response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page_response.headers["content-security-policy"]
    assert httpx.get(f"{site}/admin").status_code == 200
    js = httpx.get(f"{site}/static/chat.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    # Only the shipped page files: no source files, no paths out of the folder.
    for path in ("/static/nope.js", "/static/pages.py", "/static/..%2Froutes%2Fpages.py", "/static/../main.py"):
        r = httpx.get(site + path)
        assert r.status_code == 404, (path, r.status_code)
