"""Conversations kept server-side: who may see which, titles, the history an answer continues from.

Only complete exchanges are stored (the question and the answer it got, in one transaction), so a
conversation never resumes on a question without its answer. A new conversation's id is chosen
before the answer starts, so the stream can name it, and its row is written with the first answer.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import Conversation, ConversationTurn
from shared.errors import NotFound

from ..auth.principal import Principal
from ..repositories import conversations as repo
from ..repositories.conversations import NewTurn, Owner

TITLE_CHARS = 80
# Turns loaded to continue a conversation; what fits the model's context is decided later.
HISTORY_TURNS = 20


@dataclass(frozen=True)
class ConversationRef:
    """The conversation an answer belongs to."""

    id: uuid.UUID
    owner: Owner
    new: bool
    title: str
    model: str | None = None  # what answers it: None the server's default (see services/model_choice.py)


def owner_of(principal: Principal) -> Owner:
    return Owner(tenant_id=principal.tenant_id, key_id=principal.key_id, sees_all=principal.is_admin)


def title_from(question: str) -> str:
    """The first question, on one line, cut at a word near TITLE_CHARS."""
    text = re.sub(r"\s+", " ", question).strip()
    if len(text) <= TITLE_CHARS:
        return text
    cut = text[:TITLE_CHARS].rsplit(" ", 1)[0] or text[:TITLE_CHARS]
    return cut.rstrip(" ,;:") + "…"


def _not_found(conversation_id: uuid.UUID) -> NotFound:
    return NotFound(f"no conversation '{conversation_id}' for this key; list yours with GET /api/ai/conversations",
                    code="conversation_not_found")


class ConversationStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def start(self, principal: Principal, question: str, model: str | None = None) -> ConversationRef:
        """A new conversation (stored with its first answer)."""
        return ConversationRef(id=uuid.uuid4(), owner=owner_of(principal), new=True, title=title_from(question),
                               model=model)

    async def resume(self, principal: Principal, conversation_id: uuid.UUID
                     ) -> tuple[ConversationRef, list[dict[str, str]]]:
        """The conversation and its recent turns as chat history; 404 when this key may not see it."""
        owner = owner_of(principal)
        async with self.sessions() as session:
            row = await repo.get(session, owner, conversation_id)
            if row is None:
                raise _not_found(conversation_id)
            turns = await repo.recent_turns(session, row.id, HISTORY_TURNS)
        # The row's own owner, so an admin continuing a user's conversation appends to that user's row.
        ref = ConversationRef(id=row.id, owner=Owner(row.tenant_id, row.owner_key_id, owner.sees_all), new=False,
                              title=row.title, model=row.model)
        return ref, [{"role": t.role, "content": t.content} for t in turns]

    async def record(self, ref: ConversationRef, question: str, answer: str, request_id: str,
                     question_meta: dict[str, Any], answer_meta: dict[str, Any]) -> bool:
        """Store one complete exchange; False when the conversation was deleted meanwhile."""
        async with self.sessions.begin() as session:
            return await repo.append(session, ref.owner, ref.id, title=ref.title, new=ref.new, model=ref.model, turns=[
                NewTurn("user", question, request_id, question_meta),
                NewTurn("assistant", answer, request_id, answer_meta)])

    async def page(self, principal: Principal, *, search: str | None, limit: int, offset: int
                   ) -> tuple[list[Conversation], int]:
        async with self.sessions() as session:
            return await repo.page(session, owner_of(principal), search=search, limit=limit, offset=offset)

    async def read(self, principal: Principal, conversation_id: uuid.UUID
                   ) -> tuple[Conversation, list[ConversationTurn]]:
        async with self.sessions() as session:
            row = await repo.get(session, owner_of(principal), conversation_id)
            if row is None:
                raise _not_found(conversation_id)
            return row, await repo.recent_turns(session, row.id)

    async def update(self, principal: Principal, conversation_id: uuid.UUID, *, title: str | None = None,
                     model: str | None = None, set_model: bool = False) -> Conversation:
        """A new title and/or model choice (`set_model`: store `model`, None meaning the default)."""
        async with self.sessions.begin() as session:
            row = await repo.edit(session, owner_of(principal), conversation_id, title=title, model=model,
                                  set_model=set_model)
        if row is None:
            raise _not_found(conversation_id)
        return row

    async def delete(self, principal: Principal, conversation_id: uuid.UUID) -> None:
        async with self.sessions.begin() as session:
            if not await repo.remove(session, owner_of(principal), conversation_id):
                raise _not_found(conversation_id)
