"""Image routes: `POST /api/generate-image` (the seed's), the gallery under `/api/images`, progress and cancel."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.responses import FileResponse

from shared.errors import NotFound
from shared.logging import request_id_var
from shared.protocol.images import JOB_ID_PATTERN, ImageJobStatus

from ..auth.deps import PrincipalDep
from ..deps import SessionDep, StateDep, TenantDep
from ..image_schemas import ImageCreate, ImageCreated, ImageDeleted, ImagePage, ImagePublic
from ..repositories import images as images_repo
from ..services.images import image_url, remove_file

router = APIRouter(tags=["images"])

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]


def _public(image) -> ImagePublic:
    return ImagePublic(id=image.id, image_url=image_url(image.id), prompt=image.prompt,
                       negative_prompt=image.negative_prompt, width=image.width, height=image.height,
                       num_inference_steps=image.num_inference_steps, guidance_scale=image.guidance_scale,
                       seed=image.seed, model=image.model, ms=image.ms, size_bytes=image.size_bytes,
                       created_by=image.created_by, created_at=image.created_at)


@router.post("/api/generate-image", response_model=ImageCreated,
             responses={409: {"description": "cancelled"}, 503: {"description": "off, busy (Retry-After) or down"}})
async def generate_image(body: ImageCreate, request: Request, session: SessionDep, state: StateDep,
                         tenant: TenantDep, principal: PrincipalDep) -> ImageCreated:
    studio = state.images
    studio.check(body)  # a bad size or step count is refused before anything waits
    work = asyncio.ensure_future(studio.generate(session, tenant, principal, body, request_id_var.get() or ""))

    async def watch() -> None:
        # A browser that goes away cancels the call, which closes the connection to the inference
        # service, which stops the generation at its next step.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        work.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        image = await work
    finally:
        watcher.cancel()
    public = _public(image)
    return ImageCreated(image_url=public.image_url, metadata={
        "id": str(image.id), "prompt": image.prompt,
        "parameters": {"negative_prompt": image.negative_prompt, "width": image.width, "height": image.height,
                       "num_inference_steps": image.num_inference_steps, "guidance_scale": image.guidance_scale,
                       "seed": image.seed},
        "model": image.model, "ms": image.ms, "created_by": image.created_by,
        "created_at": image.created_at.isoformat()})


@router.get("/api/images", response_model=ImagePage)
async def list_images(session: SessionDep, state: StateDep, tenant: TenantDep,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50,
                      offset: Annotated[int, Query(ge=0, le=10**12)] = 0) -> ImagePage:
    items, total = await images_repo.list_page(session, tenant, limit=limit, offset=offset)
    return ImagePage(items=[_public(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/api/images/jobs/{job_id}", response_model=ImageJobStatus)
async def image_job(job_id: JobId, state: StateDep) -> ImageJobStatus:
    return await state.images.client.job(job_id)


@router.post("/api/images/jobs/{job_id}/cancel", response_model=ImageJobStatus)
async def cancel_image_job(job_id: JobId, state: StateDep) -> ImageJobStatus:
    return await state.images.client.cancel(job_id)


@router.get("/api/images/{image_id}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
async def image_file(image_id: uuid.UUID, session: SessionDep, state: StateDep, tenant: TenantDep) -> FileResponse:
    image = await state.images.get(session, tenant, image_id)
    path = state.images.path_of(image)
    if not path.is_file():
        raise NotFound(f"the file of image {image_id} is missing from {path.parent}; delete the image")
    # Private: the URL needs a key, so no shared cache may keep the picture.
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/api/images/{image_id}", response_model=ImagePublic)
async def get_image(image_id: uuid.UUID, session: SessionDep, state: StateDep, tenant: TenantDep) -> ImagePublic:
    return _public(await state.images.get(session, tenant, image_id))


@router.delete("/api/images/{image_id}", response_model=ImageDeleted)
async def delete_image(image_id: uuid.UUID, session: SessionDep, state: StateDep, tenant: TenantDep,
                       background: BackgroundTasks) -> ImageDeleted:
    path = await state.images.delete(session, tenant, image_id)
    background.add_task(remove_file, path)  # runs after the deletion is committed and the reply sent
    return ImageDeleted(id=image_id)
