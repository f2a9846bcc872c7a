"""Thumbs up / down on an answer: a `feedback` event the export uses to drop bad answers."""

from __future__ import annotations

from fastapi import APIRouter

from shared.errors import NotFound

from ..deps import SessionDep, TenantDep
from ..repositories import analytics
from ..repositories.events import insert_event
from ..schemas import FeedbackRequest

router = APIRouter()


@router.post("/api/ai/feedback")
async def feedback(body: FeedbackRequest, session: SessionDep, tenant: TenantDep) -> dict:
    if not await analytics.answer_exists(session, tenant, body.request_id):
        raise NotFound(f"no answer with request_id '{body.request_id}'; use the request_id a chat reply returned")
    event_id = await insert_event(session, tenant, "feedback", value=1.0 if body.rating == "up" else -1.0,
                                  meta={"answer_request_id": body.request_id, "rating": body.rating,
                                        "comment": body.comment})
    return {"ok": True, "id": event_id}
