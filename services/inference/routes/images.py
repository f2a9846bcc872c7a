"""Image routes: OpenAI's `POST /v1/images/generations`, the seed's `POST /generate-image`, job progress and cancel."""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from shared.protocol.images import (
    JOB_ID_PATTERN,
    ImageData,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImageJobStatus,
    ImageRunInfo,
    NativeImageRequest,
    NativeImageResponse,
)

from ..cancellation import unless_disconnected
from ..deps import StateDep, require_token
from ..images import GeneratedImages, ImageGenerator, ImageJob

router = APIRouter(dependencies=[Depends(require_token)], tags=["images"])


def get_images(state: StateDep) -> ImageGenerator:
    return state.images


ImagesDep = Annotated[ImageGenerator, Depends(get_images)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _info(job: ImageJob, result: GeneratedImages) -> ImageRunInfo:
    return ImageRunInfo(job_id=job.id, model=result.model, device=result.device, width=job.width, height=job.height,
                        num_inference_steps=job.steps, guidance_scale=job.guidance_scale, seed=job.seed,
                        ms=result.ms, nsfw=result.nsfw)


@router.post("/v1/images/generations", response_model=ImageGenerationResponse, response_model_exclude_none=True)
async def generations(body: ImageGenerationRequest, request: Request, images: ImagesDep) -> ImageGenerationResponse:
    width, height = body.dimensions()
    job = images.new_job(prompt=body.prompt, negative_prompt=body.negative_prompt, width=width, height=height,
                         steps=body.num_inference_steps, guidance_scale=body.guidance_scale, seed=body.seed,
                         n=body.n, job_id=body.job_id)
    result = await unless_disconnected(request, images.run(job))
    # No storage here (the gateway keeps images): a `url` is a data: URL holding the PNG itself.
    data = [ImageData(b64_json=base64.b64encode(png).decode("ascii")) if body.response_format == "b64_json"
            else ImageData(url=_data_url(png)) for png in result.pngs]
    return ImageGenerationResponse(created=int(time.time()), data=data, aion=_info(job, result))


@router.post("/generate-image", response_model=NativeImageResponse)
async def generate_image(body: NativeImageRequest, request: Request, images: ImagesDep) -> NativeImageResponse:
    job = images.new_job(prompt=body.prompt, negative_prompt=body.negative_prompt, width=body.width,
                         height=body.height, steps=body.num_inference_steps, guidance_scale=body.guidance_scale,
                         seed=body.seed, job_id=body.job_id)
    result = await unless_disconnected(request, images.run(job))
    info = _info(job, result)
    parameters = {"negative_prompt": job.negative_prompt or "", "width": job.width, "height": job.height,
                  "num_inference_steps": job.steps, "guidance_scale": job.guidance_scale, "seed": job.seed}
    return NativeImageResponse(ms=result.ms, image_url=_data_url(result.pngs[0]), metadata={
        "prompt": job.prompt, "parameters": parameters, "model": info.model, "device": info.device,
        "job_id": job.id, "nsfw": info.nsfw})


def _status(images: ImageGenerator, job: ImageJob) -> ImageJobStatus:
    return ImageJobStatus(id=job.id, status=job.status, step=job.step, steps=job.steps,
                          position=images.position(job), error=job.error or (
                              job.cancel_reason if job.status == "cancelled" else None))


@router.get("/v1/images/jobs/{job_id}", response_model=ImageJobStatus)
async def job_status(job_id: JobId, images: ImagesDep) -> ImageJobStatus:
    return _status(images, images.job(job_id))


@router.post("/v1/images/jobs/{job_id}/cancel", response_model=ImageJobStatus)
async def cancel_job(job_id: JobId, images: ImagesDep) -> ImageJobStatus:
    return _status(images, images.cancel(job_id))
