"""The inference service app: the only process that holds model weights."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from shared.errors import install_error_handlers
from shared.logging import RequestIdMiddleware

from .routes import adapters, health, images, native, openai
from .settings import InferenceSettings, get_settings
from .state import InferenceState


def create_app(settings: InferenceSettings | None = None) -> FastAPI:
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

    app.add_middleware(RequestIdMiddleware)
    for module in (health, native, openai, adapters, images):
        app.include_router(module.router)
    return app
