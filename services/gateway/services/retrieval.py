"""The retrieval half of the answer path: embed the query -> two arms -> fusion -> MMR to k -> confidence C.

The arms: pgvector ANN (cosine over the query's embedding) and Postgres full text (the question's
words against each chunk's `tsv`). Their top-N lists are fused by reciprocal rank fusion (weights and
on/off per arm: AION_RETRIEVAL_*), the best N fused candidates go to MMR, and MMR picks k.

How the fused ranking and C relate: the fusion decides *which* passages are shown and in what order;
C is still the seed's number, clamp((mean cosine of the chosen passages + 1) / 2, 0, 1), so it means
what it meant before hybrid search and thresholds (tau) keep their meaning. A passage only the text arm
found gets its cosine from its stored vector. MMR's relevance term is the fused score scaled to [0, 1]
when both arms contributed, and the cosine when only the vector arm did (exactly the vector-only path).

When the query cannot be embedded (inference down), retrieval degrades to the text arm alone and says
so (`Retrieval.degraded_reason`); no cosine exists then, so C is 0 and the answer router sends the
question to the budgeted fallback, as the seed does for a weak retrieval.

`retrieve` is what the search route and the chat path call; it also writes the `retrieval` event.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequest, ServiceUnavailable
from shared.logging import request_id_var

from ..clients.inference import InferenceClient
from ..repositories import chunks as chunks_repo
from ..repositories import events as events_repo
from .confidence import confidence
from .fusion import DEFAULT_RRF_K, reciprocal_rank_fusion
from .mmr import DEFAULT_DUPLICATE_SIMILARITY, mmr_select

logger = logging.getLogger(__name__)

RETRIEVAL_EVENT = "retrieval"
EMBEDDINGS_UNAVAILABLE = "embeddings_unavailable"
VECTOR_ARM, TEXT_ARM = "vector", "text"


@dataclass(frozen=True)
class Arms:
    """How the two retrieval arms are weighted in the fusion; 0 switches an arm off."""

    vector: float = 1.0
    text: float = 1.0
    rrf_k: int = DEFAULT_RRF_K
    # The text arm ranks at most about this many matching rows (see repositories/chunks.py).
    text_max_rows: int = 5000

    @property
    def name(self) -> str:
        return "hybrid" if self.vector > 0 and self.text > 0 else VECTOR_ARM if self.vector > 0 else TEXT_ARM


@dataclass(frozen=True)
class Passage:
    rank: int  # 1-based, in MMR selection order
    ann_rank: int | None  # 1-based position among the ANN candidates (None: the ANN arm did not find it)
    chunk_id: int
    document_id: uuid.UUID
    source_name: str
    title: str | None
    ord: int
    text: str
    heading: str | None
    page: int | None
    score: float  # cosine similarity to the query (0 when the query could not be embedded)
    vector: np.ndarray = field(repr=False, compare=False)
    text_rank: int | None = None  # 1-based position among the full-text candidates
    fused: float = 0.0  # the reciprocal-rank-fusion score that ranked it among the candidates

    @property
    def page_or_heading(self) -> str | None:
        """What a citation shows: "p. 3" for PDFs, else the heading path."""
        return f"p. {self.page}" if self.page is not None else self.heading


@dataclass(frozen=True)
class Retrieval:
    query: str
    passages: list[Passage]
    query_vector: np.ndarray | None = field(repr=False, compare=False)  # None: the query could not be embedded
    confidence: float
    candidates: int  # how many fused candidates MMR chose from
    k: int
    top_n: int
    lam: float
    embed_ms: float = 0.0
    search_ms: float = 0.0
    event_id: int | None = None
    original_query: str | None = None  # the follow-up as asked, when `query` is its standalone rewrite
    arms: Arms = field(default_factory=Arms)
    degraded_reason: str | None = None  # why retrieval ran on full text alone (the embedding error)

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """What the caller should tell the user, as `warn` event payloads."""
        if self.degraded_reason is None:
            return []
        return [{"reason": EMBEDDINGS_UNAVAILABLE,
                 "message": f"the question could not be embedded ({self.degraded_reason}); passages were found "
                            "by full-text search alone and the retrieval confidence C is 0"}]


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


async def select_passages(session: AsyncSession, tenant_id: str, query_vector: np.ndarray | None, *, k: int,
                          top_n: int, lam: float, query: str = "", arms: Arms | None = None,
                          duplicate_similarity: float | None = DEFAULT_DUPLICATE_SIMILARITY,
                          ) -> tuple[list[Passage], int]:
    """Both arms' top-N, fused, then MMR to k; returns the passages and the candidate count.

    Without a query vector only the text arm runs (whatever its weight: it is the only one left).
    """
    arms = arms or Arms()
    vector_hits: list[chunks_repo.AnnHit] = []
    text_hits: list[chunks_repo.AnnHit] = []
    if query_vector is not None and arms.vector > 0:
        vector_hits = await chunks_repo.search_ann(session, tenant_id, query_vector, top_n)
    text_weight = arms.text if query_vector is not None else max(arms.text, 1.0)
    if text_weight > 0 and query.strip():
        text_hits = await chunks_repo.search_text(session, tenant_id, query, top_n, max_rows=arms.text_max_rows)
    fused = reciprocal_rank_fusion([(VECTOR_ARM, vector_hits, arms.vector), (TEXT_ARM, text_hits, text_weight)],
                                   rrf_k=arms.rrf_k, limit=top_n)
    if not fused:
        return [], 0
    vectors = np.vstack([f.hit.vector for f in fused])
    if query_vector is None:
        similarity = np.zeros(len(fused))
    else:
        similarity = np.array([f.hit.similarity for f in fused], dtype=np.float64)
        unknown = np.isnan(similarity)  # found by the text arm alone: the cosine from its stored vector
        if unknown.any():
            similarity[unknown] = _cosines(vectors[unknown], query_vector)
    if text_hits or query_vector is None:
        scores = np.array([f.score for f in fused])
        relevance = scores / scores.max()
    else:
        relevance = similarity
    order = mmr_select(query_vector if query_vector is not None else vectors[0], vectors, k, lam,
                       relevance=relevance, duplicate_similarity=duplicate_similarity)
    passages = []
    for rank, i in enumerate(order, start=1):
        hit = fused[i].hit
        passages.append(Passage(
            rank=rank, ann_rank=fused[i].ranks.get(VECTOR_ARM), text_rank=fused[i].ranks.get(TEXT_ARM),
            fused=fused[i].score, chunk_id=hit.chunk_id, document_id=hit.document_id, source_name=hit.source_name,
            title=hit.title, ord=hit.ord, text=hit.text, heading=hit.heading, page=hit.page,
            score=float(similarity[i]), vector=hit.vector))
    return passages, len(fused)


def _cosines(vectors: np.ndarray, query_vector: np.ndarray) -> np.ndarray:
    q = np.asarray(query_vector, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1) * (np.linalg.norm(q) or 1.0)
    return (v @ q) / np.where(norms == 0, 1.0, norms)


async def retrieve(session: AsyncSession, client: InferenceClient, tenant_id: str, query: str, *, k: int = 8,
                   top_n: int = 24, lam: float = 0.7, arms: Arms | None = None,
                   duplicate_similarity: float | None = DEFAULT_DUPLICATE_SIMILARITY, log_event: bool = True,
                   request_id: str | None = None, max_query_chars: int | None = None,
                   original_query: str | None = None) -> Retrieval:
    """Embed `query`, pick k passages (both arms' top_n -> fusion -> MMR lam), compute C, log a `retrieval` event.

    An embedding failure (the inference service down or refusing) does not fail the search: the text
    arm alone answers it, and the result says why (`degraded_reason`). `original_query`: the question
    as asked, when `query` is a follow-up's standalone rewrite (logged).
    """
    query = check_params(query, k, top_n, lam, max_query_chars)
    arms = arms or Arms()
    started = time.perf_counter()
    degraded: str | None = None
    query_vector: np.ndarray | None
    try:
        query_vector = (await client.embed([query]))[0]
    except ServiceUnavailable as exc:
        logger.warning("retrieval on full text alone: %s", exc.message)
        query_vector, degraded = None, exc.message
    embedded = time.perf_counter()
    passages, candidates = await select_passages(session, tenant_id, query_vector, k=k, top_n=top_n, lam=lam,
                                                 query=query, arms=arms,
                                                 duplicate_similarity=duplicate_similarity)
    searched = time.perf_counter()
    result = Retrieval(query=query, passages=passages, query_vector=query_vector,
                       confidence=confidence([p.score for p in passages]) if query_vector is not None else 0.0,
                       candidates=candidates, k=k, top_n=top_n, lam=lam, embed_ms=(embedded - started) * 1000,
                       search_ms=(searched - embedded) * 1000, original_query=original_query, arms=arms,
                       degraded_reason=degraded)
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
        "arms": {"vector": retrieval.arms.vector, "text": retrieval.arms.text, "rrf_k": retrieval.arms.rrf_k},
        "degraded": retrieval.degraded_reason,
        "passages": [{"rank": p.rank, "ann_rank": p.ann_rank, "text_rank": p.text_rank, "chunk_id": p.chunk_id,
                      "document_id": str(p.document_id), "score": round(p.score, 6), "fused": round(p.fused, 6)}
                     for p in retrieval.passages],
    }
    return await events_repo.insert_event(session, tenant_id, RETRIEVAL_EVENT, value=retrieval.confidence,
                                          meta=meta, request_id=request_id)
