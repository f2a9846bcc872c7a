"""SQL for generated images' metadata (`images`); tenant explicit in every query."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import GeneratedImage


async def insert(session: AsyncSession, **values: Any) -> GeneratedImage:
    image = GeneratedImage(**values)
    session.add(image)
    await session.flush()
    await session.refresh(image)  # created_at from the server
    return image


async def get(session: AsyncSession, tenant_id: str, image_id: uuid.UUID) -> GeneratedImage | None:
    return await session.scalar(select(GeneratedImage).where(GeneratedImage.tenant_id == tenant_id,
                                                             GeneratedImage.id == image_id))


async def list_page(session: AsyncSession, tenant_id: str, *, limit: int,
                    offset: int) -> tuple[list[GeneratedImage], int]:
    total = await session.scalar(select(func.count()).select_from(GeneratedImage)
                                 .where(GeneratedImage.tenant_id == tenant_id))
    rows = await session.scalars(select(GeneratedImage).where(GeneratedImage.tenant_id == tenant_id)
                                 .order_by(GeneratedImage.created_at.desc(), GeneratedImage.id)
                                 .limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def delete_image(session: AsyncSession, tenant_id: str, image_id: uuid.UUID) -> GeneratedImage | None:
    result = await session.execute(delete(GeneratedImage).where(GeneratedImage.tenant_id == tenant_id,
                                                                GeneratedImage.id == image_id)
                                   .returning(GeneratedImage))
    return result.scalar_one_or_none()
