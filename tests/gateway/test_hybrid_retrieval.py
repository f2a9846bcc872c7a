"""Hybrid retrieval on real package READMEs (the evaluation corpus), real MiniLM, real Postgres: keyword
questions whose passage the embedding ranks below others are found first once full text joins, while
C stays the mean cosine of the chosen passages."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.repositories import chunks as chunks_repo

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "eval" / "corpus"
FILES = ("httpx.md", "idna.md", "platformdirs.md", "sse-starlette.md", "uvicorn.md")
# question -> (document, text of the right passage)
KEYWORD = {
    "What does uvicorn's --reload flag use in development mode?": ("uvicorn.md", "--reload"),
    "Where does user_state_dir point on Linux?": ("platformdirs.md", "user_state_dir"),
    "Which platformdirs function returns the user config folder as a pathlib.Path?":
        ("platformdirs.md", "user_config_path"),
    "What is the default ping interval of EventSourceResponse?": ("sse-starlette.md", "Ping interval"),
}


@pytest.fixture
async def readmes(gateway):
    files = [("files", (name, (CORPUS / name).read_bytes(), "text/markdown")) for name in FILES]
    r = await gateway.post("/api/ai/documents", files=files)
    assert r.status_code == 201, r.text
    return gateway


def _rank(body: dict, document: str, needle: str) -> int | None:
    return next((p["rank"] for p in body["passages"] if p["document"] == document and needle in p["text"]), None)


async def test_keyword_questions_vector_search_misses_are_found_first_by_hybrid(readmes):
    for question, (document, needle) in KEYWORD.items():
        vector = (await readmes.post("/api/ai/search", json={"q": question, "text_weight": 0})).json()
        hybrid = (await readmes.post("/api/ai/search", json={"q": question})).json()
        assert _rank(vector, document, needle) != 1, (question, [p["text"][:60] for p in vector["passages"][:3]])
        assert _rank(hybrid, document, needle) == 1, (question, [p["text"][:60] for p in hybrid["passages"][:3]])
        top = hybrid["passages"][0]
        assert top["text_rank"] is not None and top["fused"] > 0
        assert vector["arms"] == {"vector": 1.0, "text": 0.0} and hybrid["arms"] == {"vector": 1.0, "text": 1.0}
        assert all(p["text_rank"] is None for p in vector["passages"])
        # C is the mean cosine of the chosen passages, whichever arm found them.
        mean = sum(p["score"] for p in hybrid["passages"]) / len(hybrid["passages"])
        assert hybrid["C"] == pytest.approx(min(1.0, max(0.0, (mean + 1) / 2)), abs=1e-5)

    # A passage only full text found (the ANN arm kept 4 here) gets its cosine from its stored vector.
    state = readmes.app.state.gateway
    question = "What is the default ping interval of EventSourceResponse?"
    body = (await readmes.post("/api/ai/search", json={"q": question, "k": 4, "top_n": 4})).json()
    text_only = [p for p in body["passages"] if p["ann_rank"] is None]
    assert text_only, [(p["ann_rank"], p["text_rank"]) for p in body["passages"]]
    query = (await state.inference.embed([question]))[0]
    async with state.sessions() as session:
        hits = await chunks_repo.search_text(session, "test-tenant", question, 50, max_rows=5000)
        # Portuguese and English stop words alone match nothing (no IDF in ts_rank: they would match all).
        assert await chunks_repo.search_text(session, "test-tenant", "qual é a do que não the of", 10,
                                             max_rows=5000) == []
    vectors = {h.chunk_id: h.vector for h in hits}
    for p in text_only:
        assert p["score"] == pytest.approx(float(vectors[p["chunk_id"]] @ query), abs=1e-4)
