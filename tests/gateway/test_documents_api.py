"""POST/GET/DELETE /api/ai/documents on the real app, real Postgres + pgvector and real MiniLM."""

from __future__ import annotations

import io
import uuid

import psycopg
import pytest

from .conftest import KB_DIR, kb_files, upload
from .faulty_proxy import faulty_inference
from .pdfs import build_pdf, encrypt_pdf


def _db(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _docx(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Office notes", level=1)
    for p in paragraphs:
        document.add_paragraph(p)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


async def test_ingest_many_formats_in_one_request(gateway, clean_db):
    html = b"<html><head><title>Menu</title></head><body><h2>Lunch</h2><p>Soup of the day is leek.</p></body></html>"
    files = kb_files("sourdough.md", "bicycle.md") + [
        upload("kettle.pdf", build_pdf([["The kettle boils one litre in ninety seconds."]]), "application/pdf"),
        upload("menu.html", html, "text/html"),
        upload("notes.txt", b"Plain text notes about the staff meeting on Friday.", "text/plain"),
        upload("office.docx", _docx("The printer on floor two needs toner.")),
    ]
    r = await gateway.post("/api/ai/documents", files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ingested"] == 6 and body["refused"] == 0
    for result in body["results"]:
        assert result["status"] == "created" and result["http_status"] == 201
        assert result["chunk_count"] >= 1
        uuid.UUID(result["document_id"])
    rows = _db(clean_db, "SELECT d.source_name, d.tenant_id, d.chunk_count, count(c.id), "
                         "bool_and(c.tenant_id = d.tenant_id) FROM documents d JOIN chunks c ON c.document_id = d.id "
                         "GROUP BY d.id ORDER BY 1")
    assert [r[0] for r in rows] == ["bicycle.md", "kettle.pdf", "menu.html", "notes.txt", "office.docx",
                                    "sourdough.md"]
    assert all(r[1] == "test-tenant" and r[2] == r[3] and r[4] for r in rows)
    pages = _db(clean_db, "SELECT c.page FROM chunks c JOIN documents d ON d.id = c.document_id "
                          "WHERE d.source_name = 'kettle.pdf'")
    assert pages == [(1,)]


async def test_same_content_twice_returns_the_existing_document(gateway, clean_db):
    first = (await gateway.post("/api/ai/documents", files=kb_files("bicycle.md"))).json()["results"][0]
    again = await gateway.post("/api/ai/documents", files=kb_files("bicycle.md"))
    assert again.status_code == 200
    second = again.json()["results"][0]
    assert second["status"] == "duplicate" and second["document_id"] == first["document_id"]
    assert second["chunk_count"] == first["chunk_count"]
    # Same bytes under another name: still one document, and the reply says which one.
    renamed = (await gateway.post("/api/ai/documents", files=[
        upload("copy-of-bicycle.md", (KB_DIR / "bicycle.md").read_bytes())])).json()["results"][0]
    assert renamed["status"] == "duplicate" and renamed["document_id"] == first["document_id"]
    assert "bicycle.md" in renamed["reason"]
    assert _db(clean_db, "SELECT count(*) FROM documents") == [(1,)]
    assert _db(clean_db, "SELECT count(*) FROM chunks") == [(first["chunk_count"],)]


async def test_same_name_with_new_content_replaces_the_chunks(gateway, clean_db):
    v1 = b"# Parking\n\nStaff park in the north lot behind the warehouse.\n"
    v2 = b"# Parking\n\nFrom March, staff park in the underground garage on level minus two.\n"
    created = (await gateway.post("/api/ai/documents", files=[upload("parking.md", v1)])).json()["results"][0]
    old_ids = _db(clean_db, "SELECT id FROM chunks")
    r = await gateway.post("/api/ai/documents", files=[upload("parking.md", v2)])
    assert r.status_code == 200, r.text
    replaced = r.json()["results"][0]
    assert replaced["status"] == "replaced" and replaced["document_id"] == created["document_id"]
    texts = [t for (t,) in _db(clean_db, "SELECT text FROM chunks ORDER BY ord")]
    assert texts == ["From March, staff park in the underground garage on level minus two."]
    assert not set(old_ids) & set(_db(clean_db, "SELECT id FROM chunks"))
    sha = _db(clean_db, "SELECT sha256 FROM documents")[0][0]
    assert sha == __import__("hashlib").sha256(v2).hexdigest()
    hit = (await gateway.post("/api/ai/search", json={"q": "Where do staff park now?", "k": 1})).json()
    assert "underground garage" in hit["passages"][0]["text"]


async def test_list_get_and_delete(gateway, clean_db):
    r = await gateway.post("/api/ai/documents", files=kb_files("sourdough.md", "bicycle.md", "greenhouse.md"))
    ids = {x["filename"]: x["document_id"] for x in r.json()["results"]}

    page1 = (await gateway.get("/api/ai/documents", params={"limit": 2})).json()
    page2 = (await gateway.get("/api/ai/documents", params={"limit": 2, "offset": 2})).json()
    assert page1["total"] == page2["total"] == 3
    assert len(page1["items"]) == 2 and len(page2["items"]) == 1
    assert {d["id"] for d in page1["items"] + page2["items"]} == set(ids.values())

    detail = (await gateway.get(f"/api/ai/documents/{ids['greenhouse.md']}", params={"chunks": True})).json()
    assert detail["title"] == "Greenhouse operations" and detail["mime_type"] == "text/markdown"
    assert len(detail["chunks"]) == detail["chunk_count"] > 0
    assert any(c["heading"] == "Greenhouse operations > Irrigation" for c in detail["chunks"])

    gone = await gateway.delete(f"/api/ai/documents/{ids['greenhouse.md']}")
    assert gone.status_code == 200 and gone.json()["chunks_deleted"] == detail["chunk_count"]
    assert (await gateway.get(f"/api/ai/documents/{ids['greenhouse.md']}")).status_code == 404
    assert (await gateway.delete(f"/api/ai/documents/{ids['greenhouse.md']}")).status_code == 404
    assert _db(clean_db, "SELECT count(*) FROM chunks WHERE document_id = %s", ids["greenhouse.md"]) == [(0,)]
    found = (await gateway.post("/api/ai/search", json={"q": "When do the greenhouse roof vents open?"})).json()
    assert all(p["document"] != "greenhouse.md" for p in found["passages"])

    bad = await gateway.get("/api/ai/documents/not-a-uuid")
    assert bad.status_code == 422 and "document_id" in bad.json()["error"]["message"]
    assert (await gateway.get(f"/api/ai/documents/{uuid.uuid4()}")).status_code == 404


BAD_FILES = [
    ("photo.png", b"\x89PNG\r\n\x1a\nnot text", 415, "unsupported_type"),
    ("empty.md", b"", 400, "empty_file"),
    ("blank.txt", b"  \n\t\n ", 400, "empty_file"),
    ("broken.pdf", b"%PDF-1.7\n1 0 obj garbage", 422, "unreadable"),
    ("binary.txt", b"\x00\x01\x02\x03 binary", 422, "unreadable"),
    ("bad.docx", b"not a zip at all", 422, "unreadable"),
    ("scan.pdf", build_pdf([[""]]), 422, "no_text"),
    ("locked.pdf", encrypt_pdf(build_pdf([["Top secret plans."]])), 422, "encrypted_pdf"),
]


@pytest.mark.parametrize(("name", "data", "status", "code"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_each_bad_file_alone_is_a_4xx_with_its_reason(gateway, clean_db, name, data, status, code):
    r = await gateway.post("/api/ai/documents", files=[upload(name, data)])
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code and name in body["error"]["message"]
    (result,) = body["results"]
    assert (result["status"], result["http_status"], result["code"]) == ("refused", status, code)
    assert result["reason"] and result["document_id"] is None
    assert _db(clean_db, "SELECT count(*) FROM documents") == [(0,)]


async def test_bad_files_do_not_stop_the_good_ones(gateway, clean_db):
    files = [upload(n, d) for n, d, _, _ in BAD_FILES] + kb_files("greenhouse.md")
    r = await gateway.post("/api/ai/documents", files=files)
    assert r.status_code == 207, r.text
    results = {x["filename"]: x for x in r.json()["results"]}
    assert results["greenhouse.md"]["status"] == "created"
    for name, _, status, code in BAD_FILES:
        assert (results[name]["http_status"], results[name]["code"]) == (status, code)
    assert _db(clean_db, "SELECT source_name FROM documents") == [("greenhouse.md",)]


async def test_file_over_the_size_limit(make_gateway, clean_db):
    async with make_gateway(AION_MAX_UPLOAD_MB=0.01) as gw:  # ~10 KB
        big = ("# Big\n\n" + "A sentence that fills the file. " * 600).encode()
        r = await gw.post("/api/ai/documents", files=[upload("big.md", big)] + kb_files("bicycle.md"))
        assert r.status_code == 207
        results = {x["filename"]: x for x in r.json()["results"]}
        assert results["big.md"]["http_status"] == 413 and "limit" in results["big.md"]["reason"]
        assert results["bicycle.md"]["status"] == "created"
        alone = await gw.post("/api/ai/documents", files=[upload("big.md", big)])
        assert alone.status_code == 413 and alone.json()["error"]["code"] == "file_too_large"
    assert _db(clean_db, "SELECT source_name FROM documents") == [("bicycle.md",)]


async def test_too_many_files_and_no_files(make_gateway):
    async with make_gateway(AION_MAX_UPLOAD_FILES=2) as gw:
        r = await gw.post("/api/ai/documents", files=kb_files("bicycle.md", "sourdough.md", "greenhouse.md"))
        assert r.status_code == 400 and "at most 2" in r.json()["error"]["message"]
        none = await gw.post("/api/ai/documents", data={"x": "1"})
        assert none.status_code == 422 and "files" in none.json()["error"]["message"]


async def test_inference_failing_mid_document_leaves_nothing_behind(make_gateway, clean_db, inference_url):
    long_doc = "# Long\n\n" + "\n\n".join(
        f"Paragraph {i} describes machine number {i} in the workshop, its maintenance schedule and its operator."
        for i in range(40))
    # Batches of 4 texts: the small file needs 1 call, the long one ~4; the gateway's start-up check of the
    # embedding dimension is one more (the first), so the proxy fails from call 4 on.
    with faulty_inference(inference_url, fail_after=3) as (url, proxy):
        async with make_gateway(AION_LOCAL_LLM_URL=url, AION_EMBED_BATCH_SIZE=4, AION_CHUNK_TOKENS=64,
                                AION_CHUNK_OVERLAP=0) as gw:
            r = await gw.post("/api/ai/documents", files=kb_files("bicycle.md") + [upload("long.md", long_doc.encode())])
    assert proxy.calls >= 4
    assert r.status_code == 207, r.text
    results = {x["filename"]: x for x in r.json()["results"]}
    assert results["bicycle.md"]["status"] == "created"
    assert results["long.md"]["status"] == "failed" and results["long.md"]["http_status"] == 503
    assert "inference service" in results["long.md"]["reason"]
    assert _db(clean_db, "SELECT source_name FROM documents") == [("bicycle.md",)]
    assert _db(clean_db, "SELECT count(*) FROM chunks") == [(results["bicycle.md"]["chunk_count"],)]


async def test_inference_down_is_a_503_not_a_500(make_gateway, clean_db):
    """Ingestion needs embeddings (503); search degrades to full text alone and says why."""
    from tests.fixtures.servers import free_port

    async with make_gateway(AION_LOCAL_LLM_URL=f"http://127.0.0.1:{free_port()}") as gw:
        r = await gw.post("/api/ai/documents", files=kb_files("bicycle.md"))
        assert r.status_code == 503 and "aion inference" in r.json()["error"]["message"]
        s = await gw.post("/api/ai/search", json={"q": "anything"})
        assert s.status_code == 200 and s.json()["passages"] == [] and s.json()["C"] == 0.0
        warning = s.json()["warnings"][0]
        assert warning["reason"] == "embeddings_unavailable" and "aion inference" in warning["message"]
        health = (await gw.get("/health")).json()
        assert health["database"] == "ok" and health["inference"] == "unreachable"
    assert _db(clean_db, "SELECT count(*) FROM documents") == [(0,)]
