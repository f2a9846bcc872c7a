"""Stored conversations: list (newest first, searchable, paginated), read with turns, rename or choose the
model that answers it, delete.

A user key sees the conversations it began; an admin key sees every conversation of its tenant.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from ..auth.deps import PrincipalDep
from ..deps import StateDep
from ..schemas import (
    ConversationDeleted,
    ConversationDetail,
    ConversationPage,
    ConversationRename,
    ConversationSummary,
    ConversationTurnOut,
)

router = APIRouter(prefix="/api/ai/conversations", tags=["conversations"])

# Postgres OFFSET is a bigint: a larger value is a database error (500), not an empty page.
MAX_OFFSET = 10**12


@router.get("", response_model=ConversationPage)
async def list_conversations(
    state: StateDep, principal: PrincipalDep,
    # No NUL: Postgres text cannot hold it (a 422 here, not a database error).
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$",
                                   description="search titles and turn text")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ConversationPage:
    rows, total = await state.conversations.page(principal, search=(q or "").strip() or None, limit=limit,
                                                 offset=offset)
    return ConversationPage(items=[ConversationSummary.model_validate(r) for r in rows], total=total, limit=limit,
                            offset=offset)


@router.get("/{conversation_id}", response_model=ConversationDetail)
async def read_conversation(conversation_id: uuid.UUID, state: StateDep, principal: PrincipalDep
                            ) -> ConversationDetail:
    row, turns = await state.conversations.read(principal, conversation_id)
    return ConversationDetail(**ConversationSummary.model_validate(row).model_dump(),
                              turns=[ConversationTurnOut.model_validate(t) for t in turns])


@router.patch("/{conversation_id}", response_model=ConversationSummary)
async def update_conversation(conversation_id: uuid.UUID, body: ConversationRename, state: StateDep,
                              principal: PrincipalDep) -> ConversationSummary:
    """A new title, or the model its next answers come from ('default', 'base' or an adapter version)."""
    model = await state.chat.models.check(principal.tenant_id, body.model) if body.model is not None else None
    row = await state.conversations.update(principal, conversation_id, title=body.title, model=model,
                                           set_model=body.model is not None)
    return ConversationSummary.model_validate(row)


@router.delete("/{conversation_id}", response_model=ConversationDeleted)
async def delete_conversation(conversation_id: uuid.UUID, state: StateDep, principal: PrincipalDep
                              ) -> ConversationDeleted:
    await state.conversations.delete(principal, conversation_id)
    return ConversationDeleted(id=conversation_id)
