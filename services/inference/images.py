"""Image generation: one diffusers pipeline, one generation at a time, a bounded line of waiting requests.

The pipeline runs on a single worker thread (never on the event loop), which is also what keeps two
generations off the device at once; a line of futures in front of it is the queue that requests wait
in, so a waiting request can be counted, reported and cancelled without ever reaching the device. A running generation is cancelled between
denoising steps (the step callback raises), by the client going away or by an explicit cancel.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.errors import AionError, BadRequest, Conflict, NotFound, ServiceUnavailable

from .settings import InferenceSettings

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "cancelled", "failed"]
Status = Literal["off", "not_loaded", "loading", "ready", "error"]

DEFAULT_SIZE = 512
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
# Finished jobs kept for their progress reports (a client polls once more after its request returns).
_FINISHED_KEPT = 256


class ImageCancelled(AionError):
    status_code = 409
    code = "cancelled"
    error_type = "invalid_request_error"


@dataclass
class ImageJob:
    id: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    n: int = 1
    status: JobStatus = "queued"
    step: int = 0
    error: str | None = None
    cancel_reason: str | None = None
    created: float = field(default_factory=time.monotonic)
    # Two flags for one cancel: the worker thread polls the first, a request waiting its turn awaits the second.
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel_waiting: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def cancel(self, reason: str) -> None:
        """Called on the event loop (a cancel request, a disconnect, shutdown)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._cancel.set()
        self._cancel_waiting.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


@dataclass(frozen=True)
class GeneratedImages:
    pngs: list[bytes]
    model: str
    device: str
    ms: int
    nsfw: list[bool] | None


class ImageGenerator:
    """Owns the pipeline and the line of requests in front of it."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.model = settings.image_model
        self.status: Status = "off" if not self.model else "not_loaded"
        self.error: str | None = None
        self.device: str | None = None
        self._pipe: Any = None
        self._call_params: frozenset[str] = frozenset()
        # One worker thread: loading and every generation run there, one after another.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aion-images")
        # The line: whoever holds the device passes it to the next waiter still wanting it.
        self._busy = False
        self._turns: deque[asyncio.Future[None]] = deque()
        self._jobs: OrderedDict[str, ImageJob] = OrderedDict()
        self._admitted = 0
        self._durations: deque[float] = deque(maxlen=8)

    # -- state -------------------------------------------------------------------------------------

    def preload(self) -> None:
        """Start loading now (AION_IMAGE_PRELOAD) instead of on the first request."""
        if self.model:
            self._worker.submit(self._try_load)

    def check_available(self) -> None:
        if self.status == "off":
            raise ServiceUnavailable("image generation is off: set AION_IMAGE_MODEL to a diffusers pipeline "
                                     "(a Hugging Face id such as stable-diffusion-v1-5/stable-diffusion-v1-5, or a "
                                     "local folder) and restart the inference service", code="images_disabled")
        if self.status == "error":
            raise ServiceUnavailable(f"the image model '{self.model}' failed to load ({self.error}); fix "
                                     "AION_IMAGE_MODEL and restart the inference service", code="image_model_failed")

    def public(self) -> dict[str, Any]:
        running = sum(1 for j in self._jobs.values() if j.status == "running")
        return {"status": self.status, "model": self.model, "device": self.device, "error": self.error,
                "running": running, "waiting": max(self._admitted - running, 0),
                "max_queue": self.settings.image_max_queue}

    # -- requests ----------------------------------------------------------------------------------

    def new_job(self, *, prompt: str, negative_prompt: str | None, width: int | None, height: int | None,
                steps: int | None, guidance_scale: float | None, seed: int | None, n: int = 1,
                job_id: str | None = None) -> ImageJob:
        """A checked request; raises a 4xx naming the limit it breaks, or 503 when the line is full."""
        self.check_available()
        s = self.settings
        width, height = width or DEFAULT_SIZE, height or DEFAULT_SIZE
        steps = steps or DEFAULT_STEPS
        for name, value in (("width", width), ("height", height)):
            if value % 8 or value < 64 or value > s.image_max_side:
                raise BadRequest(f"{name} must be a multiple of 8 from 64 to {s.image_max_side} "
                                 f"(AION_IMAGE_MAX_SIDE); got {value}", code="invalid_size")
        if steps > s.image_max_steps:
            raise BadRequest(f"num_inference_steps must be at most {s.image_max_steps} (AION_IMAGE_MAX_STEPS); "
                             f"got {steps}", code="too_many_steps")
        if n > s.image_max_n:
            raise BadRequest(f"n must be at most {s.image_max_n} (AION_IMAGE_MAX_N); got {n}", code="too_many_images")
        job_id = job_id or secrets.token_hex(8)
        existing = self._jobs.get(job_id)
        if existing is not None and existing.status in ("queued", "running"):
            raise Conflict(f"a generation named '{job_id}' is already {existing.status}; use another job_id",
                           code="job_exists")
        return ImageJob(id=job_id, prompt=prompt, negative_prompt=negative_prompt or None, width=width,
                        height=height, steps=steps, n=n,
                        guidance_scale=DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale,
                        seed=secrets.randbelow(2**32) if seed is None else seed)

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: recent generations' mean time, times those ahead."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 10.0
        return max(1, math.ceil(mean * max(self._admitted, 1)))

    async def run(self, job: ImageJob) -> GeneratedImages:
        """Wait in line, then generate on the worker thread; raises ImageCancelled when cancelled."""
        limit = self.settings.image_max_queue
        if self._admitted > limit:
            raise ServiceUnavailable(
                f"{self._admitted} image generations are running or waiting, the most this service takes "
                f"(AION_IMAGE_MAX_QUEUE={limit} waiting behind the one running); retry later",
                code="images_busy", headers={"Retry-After": str(self.retry_after_s())})
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        self._admitted += 1
        try:
            await self._take_turn(job)
            try:
                if job.cancelled:
                    raise ImageCancelled(self._cancel_message(job))
                job.status = "running"
                started = time.perf_counter()
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._worker, self._generate, job)
                self._durations.append(time.perf_counter() - started)
                job.status = "done"
                return result
            finally:
                self._pass_turn()
        except ImageCancelled:
            job.status = "cancelled"
            raise
        except asyncio.CancelledError:
            # The awaiting request went away (its client disconnected): the worker stops at its next step.
            job.cancel("the client disconnected")
            job.status = "cancelled"
            raise
        except AionError as exc:
            job.status, job.error = "failed", exc.message
            raise
        except Exception as exc:
            logger.exception("image generation %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            raise AionError(f"image generation failed ({job.error}); see the inference log",
                            code="generation_failed") from exc
        finally:
            self._admitted -= 1
            self._forget_old()

    async def _take_turn(self, job: ImageJob) -> None:
        """Return holding the device, or raise ImageCancelled if the job is cancelled while it waits."""
        if not self._busy and not self._turns:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        stop = asyncio.ensure_future(job._cancel_waiting.wait())
        try:
            await asyncio.wait({turn, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._leave_line(turn)
            raise
        finally:
            stop.cancel()
        if not turn.done():
            self._leave_line(turn)
            raise ImageCancelled(self._cancel_message(job))

    def _leave_line(self, turn: asyncio.Future[None]) -> None:
        if turn.done() and not turn.cancelled():
            self._pass_turn()  # the turn arrived as the waiter left: hand it on
        else:
            turn.cancel()
            self._turns.remove(turn)

    def _pass_turn(self) -> None:
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    def job(self, job_id: str) -> ImageJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no image generation named '{job_id}' (finished ones are kept for a while only)")
        return job

    def position(self, job: ImageJob) -> int | None:
        if job.status != "queued":
            return None
        ahead = 0
        for other in self._jobs.values():
            if other is job:
                return ahead
            if other.status in ("queued", "running"):
                ahead += 1
        return ahead

    def cancel(self, job_id: str, reason: str = "cancelled on request") -> ImageJob:
        job = self.job(job_id)
        if job.status in ("queued", "running"):
            job.cancel(reason)
        return job

    def close(self) -> None:
        for job in self._jobs.values():
            job.cancel("the service is shutting down")
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status not in ("queued", "running")]
        for key in finished[:max(len(finished) - _FINISHED_KEPT, 0)]:
            del self._jobs[key]

    @staticmethod
    def _cancel_message(job: ImageJob) -> str:
        return f"the image generation '{job.id}' was cancelled ({job.cancel_reason or 'on request'})"

    # -- worker thread -----------------------------------------------------------------------------

    def _try_load(self) -> None:
        try:
            self._ensure_loaded()
        except AionError:
            pass  # recorded in status/error; requests get the 503 that names the setting

    def _ensure_loaded(self) -> Any:
        if self._pipe is not None:
            return self._pipe
        if self.status == "error":
            self.check_available()
        self.status = "loading"
        started = time.perf_counter()
        try:
            self._pipe = self._load()
        except Exception as exc:
            logger.exception("loading the image model %s failed", self.model)
            self.status, self.error = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
            self.check_available()
        self.status = "ready"
        logger.info("image model ready: %s on %s in %.1f s", self.model, self.device, time.perf_counter() - started)
        return self._pipe

    def _load(self) -> Any:
        import torch
        from diffusers import DiffusionPipeline

        from .loader import choose_device, is_cuda

        s = self.settings
        device = choose_device(s.image_device)
        cuda = is_cuda(device)
        if s.threads and not cuda:
            torch.set_num_threads(s.threads)
        dtype = torch.float16 if cuda else torch.float32
        pipe = DiffusionPipeline.from_pretrained(s.image_model, dtype=dtype)
        if s.image_attention_slicing and hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing()
        vae = getattr(pipe, "vae", None)
        if s.image_vae_slicing and vae is not None and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        if s.image_cpu_offload and cuda:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.device = device
        self._call_params = frozenset(inspect.signature(pipe.__call__).parameters)
        return pipe

    def _generate(self, job: ImageJob) -> GeneratedImages:
        import torch

        pipe = self._ensure_loaded()
        if job.cancelled:
            raise ImageCancelled(self._cancel_message(job))
        started = time.perf_counter()

        def on_step(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            job.step = step + 1
            if job.cancelled:
                raise ImageCancelled(self._cancel_message(job))
            return tensors

        # A CPU generator: the same seed gives the same starting noise on any device.
        generator = torch.Generator(device="cpu").manual_seed(job.seed)
        kwargs: dict[str, Any] = {
            "prompt": job.prompt, "width": job.width, "height": job.height, "num_inference_steps": job.steps,
            "guidance_scale": job.guidance_scale, "num_images_per_prompt": job.n, "generator": generator,
            "output_type": "pil", "callback_on_step_end": on_step}
        if job.negative_prompt:
            kwargs["negative_prompt"] = job.negative_prompt
        unknown = [k for k in kwargs if k not in self._call_params]
        if "negative_prompt" in unknown:
            raise BadRequest(f"the image model '{self.model}' takes no negative_prompt; leave it empty",
                             code="unsupported_parameter")
        for name in unknown:
            kwargs.pop(name)
        with torch.inference_mode():
            output = pipe(**kwargs)
        job.step = job.steps
        pngs = []
        for image in output.images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        nsfw = getattr(output, "nsfw_content_detected", None)
        return GeneratedImages(pngs=pngs, model=str(self.model), device=str(self.device),
                               ms=int((time.perf_counter() - started) * 1000),
                               nsfw=[bool(x) for x in nsfw] if nsfw is not None else None)
