"""Retrieval on a small shipped corpus: the known passage comes first, MMR drops near-duplicates,
every search is logged, and a write that fails part-way leaves nothing behind."""

from __future__ import annotations

import difflib
import hashlib
import itertools

import numpy as np
import psycopg
import pytest

from services.gateway.repositories import chunks as chunks_repo
from services.gateway.services.chunking import ChunkDraft
from services.gateway.services.ingestion import PreparedDocument, store_document
from services.gateway.services.retrieval import retrieve

from .conftest import kb_files, upload
from .pdfs import build_pdf

KETTLE_PDF = build_pdf([
    ["Zephyr electric kettle - user manual", "Fill the kettle to at least the MIN mark before switching it on.",
     "Never immerse the base in water."],
    ["Warranty", "The Zephyr kettle is covered by a warranty of 27 months from the date of purchase.",
     "Keep the receipt as proof of purchase."],
], title="Zephyr kettle manual")

# question -> (document, page or heading, words the passage must contain)
KNOWN = {
    "How often should the sourdough starter be fed?":
        ("sourdough.md", "Sourdough baking notes > Starter feeding", "fed twice a day"),
    "What pressure should touring tyres be inflated to?":
        ("bicycle.md", "Bicycle maintenance checklist > Tyre pressure", "4.5 bar"),
    "When do the greenhouse roof vents open?":
        ("greenhouse.md", "Greenhouse operations > Temperature and ventilation", "27 °C"),
    "How long is the warranty on the kettle?": ("zephyr-kettle.pdf", "p. 2", "27 months"),
    "Who was the last keeper of the lighthouse?": ("lighthouse.md", "Gull Island lighthouse > Keepers",
                                                    "Agnes Morrow"),
}


@pytest.fixture
async def corpus(gateway):
    r = await gateway.post("/api/ai/documents", files=kb_files() + [
        upload("zephyr-kettle.pdf", KETTLE_PDF, "application/pdf")])
    assert r.status_code == 201, r.text
    return gateway


async def test_known_passage_is_retrieved_first(corpus):
    for question, (document, where, words) in KNOWN.items():
        r = await corpus.post("/api/ai/search", json={"q": question})
        assert r.status_code == 200, r.text
        body = r.json()
        top = body["passages"][0]
        assert (top["document"], top["page_or_heading"]) == (document, where), (question, body["passages"][:3])
        assert words in top["text"]
        # The answer passage is clearly ahead of the runner-up, and C reflects a good match.
        assert top["score"] > body["passages"][1]["score"] + 0.1
        assert 0.6 < body["C"] <= 1.0
        assert len(body["passages"]) == 8 and body["candidates"] == 24 and body["lambda"] == 0.7
        assert [p["rank"] for p in body["passages"]] == list(range(1, 9))


async def test_off_topic_question_gets_lower_confidence(corpus):
    on = (await corpus.post("/api/ai/search", json={"q": "How often should the sourdough starter be fed?"})).json()
    off = (await corpus.post("/api/ai/search", json={"q": "Which football team won the 1998 world cup?"})).json()
    assert off["C"] < on["C"] - 0.1
    assert off["passages"][0]["score"] < 0.3


def _near_duplicates(texts: list[str]) -> list[tuple[int, int]]:
    return [(i, j) for i, j in itertools.combinations(range(len(texts)), 2)
            if difflib.SequenceMatcher(None, texts[i], texts[j]).ratio() >= 0.8]


async def test_mmr_selection_has_no_near_duplicates_while_plain_top_k_does(corpus):
    question = "How often does the Gull Island lighthouse flash and how far can it be seen?"
    state = corpus.app.state.gateway
    async with state.sessions() as session:
        query_vector = (await state.inference.embed([question]))[0]
        plain = await chunks_repo.search_ann(session, "test-tenant", query_vector, 4)
    plain_texts = [h.text for h in plain]
    assert len(_near_duplicates(plain_texts)) >= 2, plain_texts  # the four reworded copies crowd plain top-k
    # The vectors come back whole (binary transfer): each one's similarity to the query is its score.
    for hit in plain:
        assert hit.vector.shape == (384,) and hit.vector.dtype == np.float32
        assert float(hit.vector @ query_vector) == pytest.approx(hit.similarity, abs=1e-5)
    assert [h.similarity for h in plain] == sorted((h.similarity for h in plain), reverse=True)

    body = (await corpus.post("/api/ai/search", json={"q": question, "k": 4})).json()
    chosen = [p["text"] for p in body["passages"]]
    assert _near_duplicates(chosen) == [], chosen
    assert "flash every seven seconds" in chosen[0]  # the best copy is still first
    assert len(chosen) == 4 and all(p["document"] == "lighthouse.md" for p in body["passages"])


async def test_each_search_logs_a_retrieval_event(corpus, clean_db):
    r = await corpus.post("/api/ai/search", json={"q": "How do I care for the bicycle chain?", "k": 3, "top_n": 10,
                                                  "lambda": 0.5}, headers={"x-request-id": "req-123"})
    body = r.json()
    assert r.headers["x-request-id"] == "req-123" and body["request_id"] == "req-123"
    with psycopg.connect(clean_db) as conn:
        events = conn.execute("SELECT tenant_id, kind, value, meta, request_id FROM ai_events").fetchall()
    assert len(events) == 1
    tenant, kind, value, meta, request_id = events[0]
    assert (tenant, kind, request_id) == ("test-tenant", "retrieval", "req-123")
    assert value == pytest.approx(body["C"], abs=1e-6)
    assert meta["query"] == "How do I care for the bicycle chain?"
    assert (meta["k"], meta["top_n"], meta["lambda"], meta["candidates"]) == (3, 10, 0.5, 10)
    assert [(p["rank"], p["chunk_id"], p["document_id"]) for p in meta["passages"]] == [
        (p["rank"], p["chunk_id"], p["document_id"]) for p in body["passages"]]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(meta["passages"], body["passages"], strict=False))
    await corpus.post("/api/ai/search", json={"q": "second search"})
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM ai_events WHERE kind = 'retrieval'").fetchone() == (2,)


async def test_retrieve_is_callable_from_other_services(corpus):
    """The chat path calls `retrieve` directly with its own session and the shared inference client."""
    state = corpus.app.state.gateway
    async with state.sessions() as session:
        result = await retrieve(session, state.inference, "test-tenant", "kettle warranty length", k=3, top_n=12,
                                lam=0.7, request_id="chat-1")
        await session.commit()
    assert len(result.passages) == 3 and result.candidates == 12
    assert result.passages[0].page_or_heading == "p. 2" and result.event_id is not None
    assert result.query_vector.shape == (384,)
    assert abs(float(np.linalg.norm(result.query_vector)) - 1.0) < 1e-3
    assert result.confidence == pytest.approx(
        min(1.0, max(0.0, (np.mean([p.score for p in result.passages]) + 1) / 2)))
    async with state.sessions() as session:
        other_tenant = await retrieve(session, state.inference, "someone-else", "kettle warranty length", log_event=False)
    assert other_tenant.passages == [] and other_tenant.confidence == 0.0


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"q": ""}, 422, "q"),
    ({"q": "   "}, 400, "empty"),
    ({"q": "x", "k": 10, "top_n": 5}, 400, "top_n"),
    ({"q": "x", "lambda": 1.5}, 422, "lambda"),
    ({"q": "x", "k": 0}, 422, "k"),
    ({"q": "x", "unknown": 1}, 422, "unknown"),
    ({"q": "x" * 2001}, 400, "2000"),
])
async def test_bad_search_requests_are_4xx(gateway, body, status, fragment):
    r = await gateway.post("/api/ai/search", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


async def test_search_on_an_empty_knowledge_base(gateway):
    body = (await gateway.post("/api/ai/search", json={"q": "anything at all"})).json()
    assert body["passages"] == [] and body["C"] == 0.0


def _prepared(name: str, texts: list[str], vectors: np.ndarray) -> PreparedDocument:
    data = "\n".join(texts).encode()
    drafts = [ChunkDraft(i, t, "Heading", None, 5) for i, t in enumerate(texts)]
    return PreparedDocument(source_name=name, title=name, mime_type="text/plain",
                            sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), drafts=drafts,
                            vectors=vectors)


async def test_a_write_failing_midway_leaves_no_partial_chunks(gateway, clean_db):
    """Postgres itself rejects the 4th chunk (a 383-dimension vector): nothing of the document remains,
    and a document being replaced keeps its previous chunks."""
    state = gateway.app.state.gateway
    rng = np.random.default_rng(0)
    good = rng.normal(size=(6, 384)).astype(np.float32)
    bad = [*good[:3], good[3][:383], *good[4:]]

    async with state.sessions() as session:
        with pytest.raises(Exception, match="dimensions"):
            await store_document(session, "test-tenant", _prepared("broken.txt", [f"t{i}" for i in range(6)], bad))
        await session.commit()  # the savepoint was rolled back; the transaction itself is still usable
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (0,)

    async with state.sessions() as session:
        await store_document(session, "test-tenant", _prepared("kept.txt", ["old a", "old b"], good[:2]))
        await session.commit()
    async with state.sessions() as session:
        with pytest.raises(Exception, match="dimensions"):
            await store_document(session, "test-tenant", _prepared("kept.txt", [f"new {i}" for i in range(6)], bad))
        await session.commit()
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT text FROM chunks ORDER BY ord").fetchall() == [("old a",), ("old b",)]
        assert conn.execute("SELECT chunk_count FROM documents").fetchall() == [(2,)]
