"""Generated images: ask the inference service, keep the PNG under the data dir and its metadata in Postgres.

The file is written (to a temporary name, then renamed) before the row is inserted, and removed again if
the insert fails, so a row always has its file. Deleting removes the row first and the file only after
the deletion is committed (the route schedules it), so a failed request never leaves a row without a file.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import GeneratedImage
from shared.errors import AionError, BadRequest, NotFound
from shared.protocol.images import ImageGenerationRequest

from ..auth.principal import Principal
from ..clients.images import ImageClient
from ..image_schemas import ImageCreate
from ..repositories import images as images_repo

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

LogEventFn = Callable[[str, str, float, dict[str, Any], str], Awaitable[None]]  # (tenant, kind, value, meta, rid)


def image_url(image_id: uuid.UUID) -> str:
    return f"/api/images/{image_id}.png"


def _tenant_folder(tenant_id: str) -> str:
    """The tenant id as a folder name; anything unusual becomes a hash (never a path from input)."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", tenant_id):
        return tenant_id
    return "t-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:24]


class ImageStudio:
    def __init__(self, client: ImageClient, root: Path, *, max_side: int, max_steps: int,
                 log_event: LogEventFn) -> None:
        self.client = client
        self.root = root
        self.max_side = max_side
        self.max_steps = max_steps
        self.log_event = log_event

    def check(self, body: ImageCreate) -> None:
        """The limits, before anything runs; messages name the setting."""
        for name, value in (("width", body.width), ("height", body.height)):
            if value % 8 or value > self.max_side:
                raise BadRequest(f"{name} must be a multiple of 8 from 64 to {self.max_side} (AION_IMAGE_MAX_SIDE); "
                                 f"got {value}", code="invalid_size")
        if body.num_inference_steps > self.max_steps:
            raise BadRequest(f"num_inference_steps must be at most {self.max_steps} (AION_IMAGE_MAX_STEPS); got "
                             f"{body.num_inference_steps}", code="too_many_steps")

    def path_of(self, image: GeneratedImage) -> Path:
        return self.root / _tenant_folder(image.tenant_id) / image.file_name

    async def generate(self, session: AsyncSession, tenant_id: str, principal: Principal, body: ImageCreate,
                       request_id: str) -> GeneratedImage:
        self.check(body)
        started = time.perf_counter()
        meta: dict[str, Any] = {
            "prompt": body.prompt, "negative_prompt": body.negative_prompt,
            "parameters": body.model_dump(exclude={"prompt", "negative_prompt", "job_id"}),
            "who": principal.name, "key_id": str(principal.key_id) if principal.key_id else None,
            "cost_usd": 0.0, "complete": False, "error": None, "image_id": None, "model": None}
        try:
            reply = await self.client.generate(ImageGenerationRequest(
                prompt=body.prompt, negative_prompt=body.negative_prompt or None, n=1,
                size=f"{body.width}x{body.height}", response_format="b64_json",
                num_inference_steps=body.num_inference_steps, guidance_scale=body.guidance_scale, seed=body.seed,
                job_id=body.job_id))
            if not reply.data or not reply.data[0].b64_json or reply.aion is None:
                raise AionError("the image service answered without an image", code="bad_image_reply")
            png = base64.b64decode(reply.data[0].b64_json)
            if not png.startswith(PNG_SIGNATURE):
                raise AionError("the image service answered with something that is not a PNG", code="bad_image_reply")
            image = await self._store(session, tenant_id, principal, body, png, reply.aion.model_dump(), request_id)
            meta.update(complete=True, image_id=str(image.id), model=image.model, seed=image.seed,
                        inference_ms=image.ms)
            return image
        except AionError as exc:
            meta["error"] = exc.message
            raise
        except asyncio.CancelledError:
            meta["error"] = "the client went away; the generation was cancelled"
            raise
        finally:
            meta["latency_ms"] = int((time.perf_counter() - started) * 1000)
            try:
                await self.log_event(tenant_id, "image", 1.0 if meta["complete"] else 0.0, meta, request_id)
            except Exception:
                logger.exception("could not log the image event for request %s", request_id)

    async def _store(self, session: AsyncSession, tenant_id: str, principal: Principal, body: ImageCreate, png: bytes,
                     run: dict[str, Any], request_id: str) -> GeneratedImage:
        image_id = uuid.uuid4()
        file_name = f"{image_id}.png"
        folder = self.root / _tenant_folder(tenant_id)
        path = folder / file_name
        await anyio.to_thread.run_sync(_write_atomically, folder, path, png)
        try:
            return await images_repo.insert(
                session, id=image_id, tenant_id=tenant_id, file_name=file_name, size_bytes=len(png),
                sha256=hashlib.sha256(png).hexdigest(), prompt=body.prompt, negative_prompt=body.negative_prompt,
                width=run["width"], height=run["height"], num_inference_steps=run["num_inference_steps"],
                guidance_scale=run["guidance_scale"], seed=run["seed"], model=run["model"], ms=run["ms"],
                created_by=principal.name, key_id=principal.key_id, request_id=request_id,
                meta={"device": run.get("device"), "nsfw": run.get("nsfw"), "job_id": run.get("job_id")})
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def get(self, session: AsyncSession, tenant_id: str, image_id: uuid.UUID) -> GeneratedImage:
        image = await images_repo.get(session, tenant_id, image_id)
        if image is None:
            raise NotFound(f"no image with id {image_id}")
        return image

    async def delete(self, session: AsyncSession, tenant_id: str, image_id: uuid.UUID) -> Path:
        """Delete the row; returns the file to remove once the deletion is committed."""
        image = await images_repo.delete_image(session, tenant_id, image_id)
        if image is None:
            raise NotFound(f"no image with id {image_id}")
        return self.path_of(image)


def _write_atomically(folder: Path, path: Path, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)
