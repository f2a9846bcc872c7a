"""The gateway app: documents, retrieval and (later) chat over one Postgres + pgvector and the inference service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.db import EMBEDDING_DIM, make_async_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.errors import error_body, install_error_handlers
from shared.logging import RequestIdMiddleware

from .auth.tokens import TokenAuthority
from .chat_setup import build_chat
from .clients.inference import InferenceClient
from .extras_setup import build_images, build_web
from .observability import install_metrics
from .routes import (
    admin_data,
    auth,
    cache,
    conversations,
    documents,
    evaluation,
    feedback,
    health,
    images,
    metrics,
    pages,
    search,
    status,
    training,
    webpages,
)
from .routes import chat as chat_routes
from .security.install import install_security
from .services.embedding_check import EmbeddingDimensionMismatch, check_embedding_dimension
from .services.system_status import SystemStatus
from .services.tokens import load_token_counter
from .settings import GatewaySettings, get_settings
from .state import GatewayState

logger = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Starting an embedded Postgres and migrating block for a few seconds: keep them off the loop.
        url = await anyio.to_thread.run_sync(settings.resolve_database_url)
        if settings.migrate_on_start:
            await anyio.to_thread.run_sync(upgrade, url)
        engine = make_async_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                                   hnsw_ef_search=settings.hnsw_ef_search,
                                   connect_timeout_s=settings.db_connect_timeout_s)
        http = httpx.AsyncClient(timeout=httpx.Timeout(settings.inference_timeout_s, connect=5.0),
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        counter = await anyio.to_thread.run_sync(load_token_counter, settings.tokenizer)
        sessions = make_session_factory(engine)
        inference = InferenceClient(http, settings.embeddings_base_url(), token=settings.inference_token,
                                    batch_size=settings.embed_batch_size, expected_dim=EMBEDDING_DIM,
                                    on_error=app.state.metrics.inference_error,
                                    url_setting="AION_EMBEDDINGS_URL" if settings.embeddings_url else "AION_LOCAL_LLM_URL")
        try:
            await check_embedding_dimension(inference, sessions)
        except EmbeddingDimensionMismatch:
            await http.aclose()
            await engine.dispose()
            await anyio.to_thread.run_sync(settings.release_database)
            raise
        chat = build_chat(settings, sessions, inference, counter, app.state.metrics)
        web = build_web(settings, inference, counter)
        app.state.gateway = GatewayState(
            settings=settings, database_url=url, engine=engine, sessions=sessions, http=http, inference=inference,
            token_counter=counter, chat=chat, images=build_images(settings, sessions, http), web=web,
            system=SystemStatus(settings, sessions, chat.admin, inference))

        logger.info("gateway ready: chat on %s at %s, embeddings at %s, chunk sizes by %s, tenant %s",
                    settings.inference_backend, settings.local_llm_url, settings.embeddings_base_url(), counter.name,
                    settings.tenant_id)
        try:
            yield
        finally:
            await chat.close()
            await web.fetcher.aclose()
            await http.aclose()
            await engine.dispose()
            await anyio.to_thread.run_sync(settings.release_database)

    app = FastAPI(title="AION gateway", version="0.1.0", lifespan=lifespan)
    app.state.tokens = TokenAuthority(settings)
    install_error_handlers(app)
    _install_database_errors(app)
    install_security(app, settings)  # keys, rate limits, body cap, headers, CORS
    install_metrics(app)  # GET /metrics; outside security so refused requests are counted too
    app.add_middleware(RequestIdMiddleware)
    for module in (health, webpages, documents, search, chat_routes, conversations, evaluation, feedback, metrics,
                   training, admin_data, pages, images, cache, auth, status):
        app.include_router(module.router)
    return app


def _install_database_errors(app: FastAPI) -> None:
    """A database that is down or restarting is a 503 the client can retry, not a 500."""

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            logger.exception("database error")
            return JSONResponse(error_body("internal error; see the service log", "internal_error", "server_error"),
                                status_code=500)
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return JSONResponse(error_body("the database is unavailable; retry in a few seconds", "database_unavailable",
                                       "server_error"), status_code=503, headers={"Retry-After": "2"})

    app.add_exception_handler(DBAPIError, _unavailable)
