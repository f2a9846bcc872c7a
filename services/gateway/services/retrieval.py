"""The retrieval half of the answer path: embed the query -> ANN top-N -> MMR to k -> confidence C.

`retrieve` is what the search route and the chat path call; it also writes the `retrieval` event.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequest
from shared.logging import request_id_var

from ..clients.inference import InferenceClient
from ..repositories import chunks as chunks_repo
from ..repositories import events as events_repo
from .confidence import confidence
from .mmr import DEFAULT_DUPLICATE_SIMILARITY, mmr_select

RETRIEVAL_EVENT = "retrieval"


@dataclass(frozen=True)
class Passage:
    rank: int  # 1-based, in MMR selection order
    ann_rank: int  # 1-based position among the ANN candidates
    chunk_id: int
    document_id: uuid.UUID
    source_name: str
    title: str | None
    ord: int
    text: str
    heading: str | None
    page: int | None
    score: float  # cosine similarity to the query
    vector: np.ndarray = field(repr=False, compare=False)

    @property
    def page_or_heading(self) -> str | None:
        """What a citation shows: "p. 3" for PDFs, else the heading path."""
        return f"p. {self.page}" if self.page is not None else self.heading


@dataclass(frozen=True)
class Retrieval:
    query: str
    passages: list[Passage]
    query_vector: np.ndarray = field(repr=False, compare=False)
    confidence: float
    candidates: int  # how many ANN hits MMR chose from
    k: int
    top_n: int
    lam: float
    embed_ms: float = 0.0
    search_ms: float = 0.0
    event_id: int | None = None
    original_query: str | None = None  # the follow-up as asked, when `query` is its standalone rewrite


def check_params(query: str, k: int, top_n: int, lam: float, max_query_chars: int | None = None) -> str:
    """The stripped query, or a 400 that says which parameter is wrong."""
    query = query.strip()
    if not query:
        raise BadRequest("the query is empty; ask something", code="empty_query")
    if max_query_chars is not None and len(query) > max_query_chars:
        raise BadRequest(f"the query is {len(query)} characters; at most {max_query_chars} are allowed",
                         code="query_too_long")
    if not 1 <= k <= top_n:
        raise BadRequest(f"k ({k}) must be between 1 and top_n ({top_n})", code="invalid_k")
    if not 0.0 <= lam <= 1.0:
        raise BadRequest(f"lambda ({lam}) must be between 0 and 1", code="invalid_lambda")
    return query


async def select_passages(session: AsyncSession, tenant_id: str, query_vector: np.ndarray, *, k: int, top_n: int,
                          lam: float, duplicate_similarity: float | None = DEFAULT_DUPLICATE_SIMILARITY,
                          ) -> tuple[list[Passage], int]:
    """ANN top-N then MMR to k, for a query already embedded; returns the passages and the candidate count."""
    hits = await chunks_repo.search_ann(session, tenant_id, query_vector, top_n)
    if not hits:
        return [], 0
    vectors = np.vstack([h.vector for h in hits])
    relevance = np.array([h.similarity for h in hits])
    order = mmr_select(query_vector, vectors, k, lam, relevance=relevance,
                       duplicate_similarity=duplicate_similarity)
    passages = [Passage(rank=rank, ann_rank=i + 1, chunk_id=hits[i].chunk_id, document_id=hits[i].document_id,
                        source_name=hits[i].source_name, title=hits[i].title, ord=hits[i].ord, text=hits[i].text,
                        heading=hits[i].heading, page=hits[i].page, score=hits[i].similarity, vector=hits[i].vector)
                for rank, i in enumerate(order, start=1)]
    return passages, len(hits)


async def retrieve(session: AsyncSession, client: InferenceClient, tenant_id: str, query: str, *, k: int = 8,
                   top_n: int = 24, lam: float = 0.7,
                   duplicate_similarity: float | None = DEFAULT_DUPLICATE_SIMILARITY, log_event: bool = True,
                   request_id: str | None = None, max_query_chars: int | None = None,
                   original_query: str | None = None) -> Retrieval:
    """Embed `query`, pick k passages (ANN top_n -> MMR lam), compute C, and log a `retrieval` event.

    `original_query`: the question as asked, when `query` is a follow-up's standalone rewrite (logged).
    """
    query = check_params(query, k, top_n, lam, max_query_chars)
    started = time.perf_counter()
    query_vector = (await client.embed([query]))[0]
    embedded = time.perf_counter()
    passages, candidates = await select_passages(session, tenant_id, query_vector, k=k, top_n=top_n, lam=lam,
                                                 duplicate_similarity=duplicate_similarity)
    searched = time.perf_counter()
    result = Retrieval(query=query, passages=passages, query_vector=query_vector,
                       confidence=confidence([p.score for p in passages]), candidates=candidates, k=k, top_n=top_n,
                       lam=lam, embed_ms=(embedded - started) * 1000, search_ms=(searched - embedded) * 1000,
                       original_query=original_query)
    if not log_event:
        return result
    event_id = await record_retrieval(session, tenant_id, result, request_id or request_id_var.get())
    return Retrieval(**{**result.__dict__, "event_id": event_id})


async def record_retrieval(session: AsyncSession, tenant_id: str, retrieval: Retrieval,
                           request_id: str | None) -> int:
    """The `retrieval` event: query, parameters, and per passage its ranks, score and document."""
    meta = {
        "query": retrieval.query,
        "original_query": retrieval.original_query,
        "k": retrieval.k,
        "top_n": retrieval.top_n,
        "lambda": retrieval.lam,
        "candidates": retrieval.candidates,
        "embed_ms": round(retrieval.embed_ms, 2),
        "search_ms": round(retrieval.search_ms, 2),
        "passages": [{"rank": p.rank, "ann_rank": p.ann_rank, "chunk_id": p.chunk_id,
                      "document_id": str(p.document_id), "score": round(p.score, 6)} for p in retrieval.passages],
    }
    return await events_repo.insert_event(session, tenant_id, RETRIEVAL_EVENT, value=retrieval.confidence,
                                          meta=meta, request_id=request_id)
