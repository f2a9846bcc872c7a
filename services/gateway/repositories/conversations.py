"""SQL for conversations and their turns, always within one tenant and, for a user key, its own rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Conversation, ConversationTurn


@dataclass(frozen=True)
class Owner:
    """Whose conversations a caller may touch: a user key its own; an admin every one of the tenant."""

    tenant_id: str
    key_id: uuid.UUID | None
    sees_all: bool


@dataclass(frozen=True)
class NewTurn:
    role: str
    content: str
    request_id: str | None
    meta: dict[str, Any]


def _visible(stmt: Select, owner: Owner) -> Select:
    stmt = stmt.where(Conversation.tenant_id == owner.tenant_id)
    if not owner.sees_all:
        stmt = stmt.where(Conversation.owner_key_id == owner.key_id if owner.key_id
                          else Conversation.owner_key_id.is_(None))
    return stmt


async def get(session: AsyncSession, owner: Owner, conversation_id: uuid.UUID) -> Conversation | None:
    return (await session.scalars(_visible(select(Conversation), owner)
                                  .where(Conversation.id == conversation_id))).first()


async def recent_turns(session: AsyncSession, conversation_id: uuid.UUID, limit: int | None = None
                       ) -> list[ConversationTurn]:
    """The last `limit` turns (all when None), oldest first."""
    stmt = select(ConversationTurn).where(ConversationTurn.conversation_id == conversation_id) \
        .order_by(ConversationTurn.ord.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(reversed((await session.scalars(stmt)).all()))


async def append(session: AsyncSession, owner: Owner, conversation_id: uuid.UUID, *, title: str, new: bool,
                 turns: Sequence[NewTurn], model: str | None = None) -> bool:
    """Add turns after the last one (creating the conversation when `new`); False if it is gone.

    `model`: a new conversation's model choice (an existing one's is changed by `edit`).

    The conversation row is updated first: its row lock orders concurrent appends to one conversation.
    """
    if new:
        await session.execute(insert(Conversation).values(
            id=conversation_id, tenant_id=owner.tenant_id, owner_key_id=owner.key_id, title=title,
            turn_count=len(turns), model=model))
        count = len(turns)
    else:
        count = await session.scalar(
            update(Conversation).where(Conversation.id == conversation_id,
                                       Conversation.tenant_id == owner.tenant_id)
            .values(turn_count=Conversation.turn_count + len(turns), updated_at=func.now())
            .returning(Conversation.turn_count))
        if count is None:
            return False  # deleted while its answer was being written
    first = count - len(turns)
    await session.execute(insert(ConversationTurn), [
        {"conversation_id": conversation_id, "tenant_id": owner.tenant_id, "ord": first + i, "role": t.role,
         "content": t.content, "request_id": t.request_id, "meta": t.meta} for i, t in enumerate(turns)])
    return True


async def page(session: AsyncSession, owner: Owner, *, search: str | None, limit: int, offset: int
               ) -> tuple[list[Conversation], int]:
    """Newest activity first; `search` matches the title or any turn's text, case-insensitively."""
    stmt = _visible(select(Conversation), owner)
    if search:
        stmt = stmt.where(or_(
            Conversation.title.icontains(search, autoescape=True),
            exists().where(ConversationTurn.conversation_id == Conversation.id,
                           ConversationTurn.content.icontains(search, autoescape=True))))
    total = int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = await session.scalars(stmt.order_by(Conversation.updated_at.desc(), Conversation.id)
                                 .limit(limit).offset(offset))
    return list(rows), total


async def edit(session: AsyncSession, owner: Owner, conversation_id: uuid.UUID, *, title: str | None,
               model: str | None, set_model: bool) -> Conversation | None:
    row = await get(session, owner, conversation_id)
    if row is None:
        return None
    if title is not None:
        row.title = title
    if set_model:
        row.model = model
    await session.flush()
    await session.refresh(row)
    return row


async def remove(session: AsyncSession, owner: Owner, conversation_id: uuid.UUID) -> bool:
    row = await get(session, owner, conversation_id)
    if row is None:
        return False
    await session.execute(delete(Conversation).where(Conversation.id == row.id))
    return True
