"""Answers and passages render as markdown (lists, bold, code with highlighting, tables) and nothing in
them runs: HTML and script fed through an answer, through a passage and through a stored document
leave no handler, script, frame, javascript: link or page id behind, set no flag and open no dialog.

The page's CSP would block inline script as well, but it would log each refusal as a console error:
the `page` fixture fails on those, so a pass means the sanitizer removed them before the CSP had to act.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.gateway.main import create_app
from services.gateway.routes.pages import STATIC_DIR
from tests.fixtures.postgres import truncate_all
from tests.fixtures.servers import REPO, run_asgi
from tests.gateway.conftest import gateway_settings
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow

# Each would set window.__pwned (or open a dialog) if it ran.
PAYLOADS = [
    '<img src=x onerror="window.__pwned = 1">',
    "<script>window.__pwned = 2</script>",
    "[click me](javascript:window.__pwned=3)",
    '<a href="javascript:window.__pwned = 4">a link</a>',
    '<iframe srcdoc="<script>parent.__pwned = 5</script>"></iframe>',
    "<svg><script>window.__pwned = 6</script><circle onload=\"window.__pwned = 7\"/></svg>",
    '<details open ontoggle="window.__pwned = 8"><summary>x</summary></details>',
    '<form action="/api/ai/documents"><button formaction="javascript:alert(9)">go</button></form>',
    '<p id="question" class="msg user" style="color: red">clobber</p>',
    '<object data="javascript:alert(10)"></object><embed src="javascript:alert(11)">',
]
MARKDOWN = ("**Bold words** and `inline code`.\n\n- first item\n- second item\n\n"
            "```python\nprint('hello')\n```\n\n| plan | price |\n|---|---|\n| Basic | free |\n")
ANSWER = MARKDOWN + "\n" + "\n\n".join(PAYLOADS) + "\n\nThe vents open at 27 °C [1]."
PASSAGE = ("The roof vents open automatically when the inside **temperature** passes 27 °C. "
           + " ".join(PAYLOADS) + "\n\nIn winter the heater keeps the greenhouse warm.")

# What must not be inside rendered markdown.
LEFTOVERS = """(root) => [...root.querySelectorAll('*')].flatMap((e) => {
  const bad = [];
  if (['SCRIPT', 'IMG', 'IFRAME', 'SVG', 'FORM', 'BUTTON', 'OBJECT', 'EMBED', 'DETAILS', 'STYLE'].includes(e.tagName.toUpperCase()))
    bad.push(e.tagName);
  for (const a of e.attributes) {
    if (a.name.startsWith('on') || ['style', 'id', 'name', 'formaction', 'srcdoc'].includes(a.name)) bad.push(`${e.tagName}[${a.name}]`);
    if (['href', 'src', 'action', 'data'].includes(a.name) && /^\\s*javascript:/i.test(a.value)) bad.push(`${e.tagName}[${a.name}=js]`);
  }
  if (e.className && typeof e.className === 'string' && /\\bmsg\\b|\\buser\\b/.test(e.className)) bad.push(`class ${e.className}`);
  return bad;
})"""


@pytest.fixture(scope="module")
def site(database_url: str, inference_url: str) -> Iterator[str]:
    truncate_all(database_url)
    with run_asgi(create_app(gateway_settings(database_url, inference_url))) as url:
        yield url


def sse_body(*events: tuple[str, dict]) -> str:
    return "".join(f"event: {name}\r\ndata: {json.dumps(data, ensure_ascii=False)}\r\n\r\n" for name, data in events)


def watch_dialogs(page) -> list[str]:
    dialogs: list[str] = []

    def seen(d) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", seen)
    return dialogs


def test_nothing_in_an_answer_or_a_passage_runs(page, site) -> None:
    source = {"n": 1, "document": str(uuid.uuid4()), "chunk": "1", "title": "<b>Greenhouse</b> operations",
              "page_or_heading": "Temperature", "score": 0.8, "text": PASSAGE}
    pieces = [ANSWER[i:i + 40] for i in range(0, len(ANSWER), 40)]  # markup split across tokens, as models do
    body = sse_body(("sources", {"sources": [source], "C": 0.8}), *(("token", {"text": p}) for p in pieces),
                    ("done", {"used": "local", "model": "smollm2", "C": 0.8, "support": 0.9, "answer": "generated",
                              "request_id": "r1", "warnings": [], "latency_ms": 5, "usage": {}}))
    page.route("**/api/ai/chat/stream", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream; charset=utf-8"}, body=body))
    dialogs = watch_dialogs(page)
    page.goto(site + "/")
    page.get_by_label("Your question").fill("When do the greenhouse roof vents open, at what temperature?")
    page.get_by_label("Your question").press("Enter")
    page.wait_for_function("() => { const m = document.querySelector('.msg.assistant');"
                           " return m && !m.hasAttribute('aria-busy'); }")
    msg = page.locator(".msg.assistant").last
    text, passage = msg.locator(".text"), msg.locator(".passage")

    # Markdown, rendered: bold, a list, a highlighted code block, a table, and the citation as a link.
    assert text.locator("strong").first.inner_text() == "Bold words"
    assert text.locator("ul li").count() == 2 and text.locator("table td").first.inner_text() == "Basic"
    assert text.locator("pre code.hljs .hljs-string").inner_text() == "'hello'"
    assert text.locator("a.cite").inner_text() == "[1]"
    assert "**" not in text.inner_text()
    assert passage.locator("strong").inner_text() == "temperature"
    assert msg.locator(".source-head strong").inner_text() == "<b>Greenhouse</b> operations"  # a title is text

    # …and nothing of the payloads survives or ran.
    for node in (text, passage):
        assert node.evaluate(LEFTOVERS) == []
    for link in text.get_by_text("click me").all() + text.get_by_text("a link").all():
        link.click()  # a link the sanitizer left without its javascript: address goes nowhere
    assert page.evaluate("document.getElementById('question').tagName") == "TEXTAREA"
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None and dialogs == []
    # The passage's best sentence is marked even with markup around it.
    assert "roof vents open automatically" in passage.locator("mark.best").first.inner_text()
    screenshot(page, "markdown-safety.png")


def test_a_stored_document_renders_safely_on_its_page(page, site) -> None:
    doc = ("# Vent manual\n\n## Opening\n\nThe vents open at **27 °C**.\n\n" + "\n\n".join(PAYLOADS)
           + "\n\n## Closing\n\nThe vents close below 22 °C.\n\n```bash\necho closed\n```\n")
    r = httpx.post(f"{site}/api/ai/documents", files=[("files", ("vents.md", doc.encode(), "text/markdown"))],
                   timeout=120)
    assert r.status_code == 201, r.text
    document_id = r.json()["results"][0]["document_id"]
    chunks = httpx.get(f"{site}/api/ai/documents/{document_id}", params={"chunks": "true"}).json()["chunks"]
    cited = chunks[-1]
    dialogs = watch_dialogs(page)
    page.goto(f"{site}/documents/{document_id}#chunk-{cited['id']}")
    page.wait_for_selector("#doc:not([aria-busy])")
    assert page.locator("#doc-h").inner_text() == "Vent manual"
    assert page.locator(".chunk").count() == len(chunks)
    assert page.locator(".chunk.cited").get_attribute("id") == f"chunk-{cited['id']}"
    assert page.locator(".chunk.cited pre code.hljs").count() == 1
    assert [bad for body in page.locator(".chunk .passage-full").all() for bad in body.evaluate(LEFTOVERS)] == []
    assert "<img src=x" in page.locator("#chunks").inner_text()  # raw HTML is shown as the text it is
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None and dialogs == []

    # An id that names no document: said on the page; one that is not an id: a 4xx, not a page.
    page.goto(f"{site}/documents/{uuid.uuid4()}")
    page.locator("#doc-error", has_text="Could not load the document: no document with id").wait_for()
    assert httpx.get(f"{site}/documents/not-an-id").status_code == 422


def test_vendored_libraries_are_served_and_shipped(site) -> None:
    for name in ("marked.esm.js", "purify.es.mjs", "highlight.min.js"):
        r = httpx.get(f"{site}/static/vendor/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript"), name
    assert httpx.get(f"{site}/static/vendor/highlight-github.min.css").headers["content-type"].startswith("text/css")
    for path in ("/static/vendor/VERSIONS.txt", "/static/vendor/..%2Fchat.js", "/static/vendor/nope.js"):
        assert httpx.get(site + path).status_code == 404, path
    page = httpx.get(f"{site}/documents/{uuid.uuid4()}")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]

    # Every vendored file and its licence is package data of the wheel (pyproject's globs cover it).
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "services.gateway"]
    root = STATIC_DIR.parent.parent  # the package folder the globs are relative to
    shipped = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert STATIC_DIR / "vendor" / "dompurify.LICENSE.txt" in shipped
    covered = {p for g in globs for p in root.glob(g)}
    assert sorted(map(str, shipped - covered)) == []
