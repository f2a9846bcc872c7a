"""POST /api/ai/documents/url and the refresh job on the real gateway, real Postgres, real MiniLM embeddings
and a real web site on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.scheduler.jobs import refresh_web_pages
from tests.fixtures.web_site import Site, run_site

from .pdfs import build_pdf


@pytest.fixture(scope="module")
def module_site() -> Iterator[Site]:
    with run_site() as site:
        yield site


@pytest.fixture
def site(module_site: Site) -> Site:
    module_site.requests.clear()
    return module_site


@pytest.fixture
async def web_gateway(make_gateway) -> AsyncIterator:
    # The test site is on loopback: allowed here by name and by network, never by default.
    async with make_gateway(AION_URL_ALLOWLIST="127.0.0.1", AION_URL_ALLOW_NETWORKS="127.0.0.0/8",
                            AION_URL_HOST_INTERVAL="0", AION_URL_TIMEOUT="2") as client:
        yield client


def _db(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def test_a_page_becomes_a_document_with_its_headings_and_url(web_gateway, site, clean_db) -> None:
    url = f"{site.url}/guide.html"
    r = await web_gateway.post("/api/ai/documents/url", json={"url": url})
    assert r.status_code == 201, r.text
    result = r.json()["results"][0]
    assert result["status"] == "created" and result["title"] == "Harbour guide" and result["chunk_count"] >= 1
    assert _db(clean_db, "SELECT source_name, mime_type FROM documents") == [(url, "text/html")]
    headings = {h for (h,) in _db(clean_db, "SELECT heading FROM chunks")}
    assert any("Moorings" in (h or "") for h in headings)

    # Search finds it, and the passage says where it came from: the URL.
    found = (await web_gateway.post("/api/ai/search", json={"q": "what does a visitor mooring cost"})).json()
    assert found["passages"][0]["document"] == url

    again = await web_gateway.post("/api/ai/documents/url", json={"url": url})
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "unchanged"
    assert _db(clean_db, "SELECT count(*) FROM documents") == [(1,)]


async def test_depth_follows_allowed_links_only(web_gateway, site, clean_db) -> None:
    r = await web_gateway.post("/api/ai/documents/url", json={"url": f"{site.url}/guide.html", "depth": 1})
    assert r.status_code == 207, r.text
    by_url = {x["url"].removeprefix(site.url): x for x in r.json()["results"]}
    assert by_url["/guide.html"]["status"] == "created" and by_url["/linked.html"]["status"] == "created"
    assert by_url["/private/secret.html"]["code"] == "robots_disallowed"
    assert "http://example.invalid/x" not in {x["url"] for x in r.json()["results"]}  # not allowlisted
    assert "/private/secret.html" not in site.paths()
    assert {n for (n,) in _db(clean_db, "SELECT source_name FROM documents")} == {
        f"{site.url}/guide.html", f"{site.url}/linked.html"}


async def test_a_changed_page_is_replaced_by_the_refresh_job_and_an_unchanged_one_costs_a_304(
        web_gateway, site, clean_db) -> None:
    site.pages["/news.html"] = ("text/html", b"<h1>News</h1><p>The ferry leaves at nine.</p>")
    url = f"{site.url}/news.html"
    created = (await web_gateway.post("/api/ai/documents/url", json={"url": url, "refresh": "1h"})).json()
    document_id = created["results"][0]["document_id"]
    (due,) = _db(clean_db, "SELECT next_fetch_at - fetched_at FROM web_pages WHERE url = %s", url)[0]
    assert due == timedelta(hours=1)

    web = web_gateway.app.state.gateway.web
    sessions = web_gateway.app.state.gateway.sessions
    assert await refresh_web_pages(sessions, web) == {}  # nothing due yet
    web.now = lambda: datetime.now(UTC) + timedelta(hours=2)
    site.requests.clear()
    assert await refresh_web_pages(sessions, web) == {"unchanged": 1}
    assert site.requests[-1][1].get("if-none-match")  # asked with its ETag, answered 304

    site.pages["/news.html"] = ("text/html", b"<h1>News</h1><p>From Monday the ferry leaves at ten.</p>")
    web.now = lambda: datetime.now(UTC) + timedelta(hours=4)
    assert await refresh_web_pages(sessions, web) == {"replaced": 1}
    texts = [t for (t,) in _db(clean_db, "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
                                          "WHERE d.source_name = %s", url)]
    assert any("ten" in t for t in texts) and not any("at nine" in t for t in texts)
    assert _db(clean_db, "SELECT id::text FROM documents WHERE source_name = %s", url) == [(document_id,)]

    # A page that fails later keeps its document; the error is noted for the next try.
    del site.pages["/news.html"]
    web.now = lambda: datetime.now(UTC) + timedelta(hours=6)
    assert await refresh_web_pages(sessions, web) == {"failed": 1}
    assert _db(clean_db, "SELECT last_status, last_error LIKE '%%404%%' FROM web_pages WHERE url = %s", url) == [
        ("failed", True)]
    assert _db(clean_db, "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
                         "WHERE d.source_name = %s", url)[0][0] >= 1


async def test_a_pdf_page_keeps_its_page_numbers(web_gateway, site, clean_db) -> None:
    site.pages["/manual.pdf"] = ("application/pdf", build_pdf([["The winch needs grease every month."],
                                                                ["The anchor chain is forty metres long."]]))
    r = await web_gateway.post("/api/ai/documents/url", json={"url": f"{site.url}/manual.pdf"})
    assert r.status_code == 201, r.text
    assert sorted(p for (p,) in _db(clean_db, "SELECT page FROM chunks")) == [1, 2]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"url": "ftp://127.0.0.1/x"}, 400, "http(s)"),
    ({"url": "no scheme here"}, 400, "URL"),
    ({"url": "https://127.0.0.1/", "depth": 9}, 400, "AION_URL_MAX_DEPTH"),
    ({"url": "https://127.0.0.1/", "refresh": "often"}, 400, "refresh"),
    ({"url": "https://127.0.0.1/", "extra": 1}, 422, "extra"),
])
async def test_bad_requests_are_a_clear_4xx(web_gateway, body, status, words) -> None:
    r = await web_gateway.post("/api/ai/documents/url", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


async def test_refusals_say_why_and_store_nothing(make_gateway, web_gateway, site, clean_db) -> None:
    cases = {"/slow.html": (504, "AION_URL_TIMEOUT"), "/picture.png": (415, "image/png"),
             "/private/secret.html": (403, "robots.txt"), "/nowhere.html": (502, "404")}
    for path, (status, words) in cases.items():
        r = await web_gateway.post("/api/ai/documents/url", json={"url": site.url + path})
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["error"]["message"] and r.json()["results"][0]["status"] in ("refused", "failed")
    assert _db(clean_db, "SELECT count(*) FROM documents") == [(0,)]

    # Default settings: no host allowed, and loopback refused even when listed.
    async with make_gateway() as plain:
        r = await plain.post("/api/ai/documents/url", json={"url": f"{site.url}/guide.html"})
        assert r.status_code == 403 and "AION_URL_ALLOWLIST" in r.json()["error"]["message"]
    async with make_gateway(AION_URL_ALLOWLIST="127.0.0.1") as listed:
        r = await listed.post("/api/ai/documents/url", json={"url": f"{site.url}/guide.html"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "address_not_allowed"
