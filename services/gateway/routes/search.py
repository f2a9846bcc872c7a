"""POST /api/ai/search: the chosen passages with their scores, citations and the confidence C."""

from __future__ import annotations

from fastapi import APIRouter

from shared.errors import BadRequest
from shared.logging import request_id_var

from ..deps import InferenceDep, SessionDep, SettingsDep, TenantDep
from ..schemas import PassagePublic, SearchRequest, SearchResponse
from ..services.retrieval import retrieve

router = APIRouter(prefix="/api/ai", tags=["search"])


@router.post("/search", response_model=SearchResponse, response_model_by_alias=True)
async def search(body: SearchRequest, session: SessionDep, inference: InferenceDep, settings: SettingsDep,
                 tenant: TenantDep) -> SearchResponse:
    k = body.k or settings.top_k
    top_n = body.top_n or max(settings.top_n, k)
    lam = settings.mmr_lambda if body.lam is None else body.lam
    arms = settings.retrieval_arms(body.vector_weight, body.text_weight)
    if arms.vector == 0 and arms.text == 0:
        raise BadRequest("vector_weight and text_weight are both 0: give at least one arm a weight above 0",
                         code="no_retrieval_arm")
    result = await retrieve(session, inference, tenant, body.q, k=k, top_n=top_n, lam=lam, arms=arms,
                            duplicate_similarity=settings.mmr_duplicate_similarity,
                            max_query_chars=settings.max_query_chars)
    return SearchResponse(
        query=result.query, C=round(result.confidence, 6), k=k, top_n=top_n, lam=lam, candidates=result.candidates,
        passages=[PassagePublic(rank=p.rank, ann_rank=p.ann_rank, text_rank=p.text_rank, fused=round(p.fused, 6),
                                score=round(p.score, 6), chunk_id=p.chunk_id,
                                document_id=p.document_id, document=p.source_name, title=p.title, page=p.page,
                                heading=p.heading, page_or_heading=p.page_or_heading, text=p.text)
                  for p in result.passages],
        embed_ms=round(result.embed_ms, 2), search_ms=round(result.search_ms, 2),
        arms={"vector": arms.vector, "text": arms.text}, warnings=result.warnings, request_id=request_id_var.get())
