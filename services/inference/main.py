"""The inference service app: the only process that holds model weights."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.errors import error_body, install_error_handlers
from shared.library_noise import silence_known_noise
from shared.logging import RequestIdMiddleware

from .routes import adapters, health, images, native, openai
from .settings import InferenceSettings, get_settings
from .state import InferenceState


def create_app(settings: InferenceSettings | None = None) -> FastAPI:
    silence_known_noise()  # before the loader imports bitsandbytes and transformers
    settings = settings or get_settings()
    state = InferenceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background so /health answers `loading` at once and orchestrators can wait on it.
        state.start_loading()
        yield
        state.shutdown()

    app = FastAPI(title="AION inference", version="0.1.0", lifespan=lifespan)
    app.state.inference = state
    install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        state.metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        state.metrics.request_seconds.labels(route=route).observe(time.perf_counter() - started)
        return response

    if settings.embeddings_only:
        _refuse_chat_routes(app)
    app.add_middleware(RequestIdMiddleware)
    for module in (health, native, openai, adapters, images):
        app.include_router(module.router)
    return app


# What an embeddings-only service answers (besides its API pages); everything else needs a chat model.
EMBEDDINGS_ONLY_PATHS = frozenset({"/health", "/metrics", "/v1/embeddings", "/docs", "/openapi.json"})


def _refuse_chat_routes(app: FastAPI) -> None:
    @app.middleware("http")
    async def embeddings_only(request: Request, call_next):
        if request.url.path in EMBEDDINGS_ONLY_PATHS:
            return await call_next(request)
        return JSONResponse(error_body(
            f"{request.url.path} is not served: this inference service runs with --embeddings-only "
            "(AION_EMBEDDINGS_ONLY=true) and loads no chat model; it answers /v1/embeddings and /health. "
            "Send chat to the chat server (AION_LOCAL_LLM_URL), or restart it without --embeddings-only",
            "chat_not_served", "invalid_request_error"), status_code=503)
