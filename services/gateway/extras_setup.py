"""Builds the image studio and the web-page ingestor once, in the lifespan (the scheduler reuses the latter)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .clients.images import ImageClient
from .clients.inference import InferenceClient
from .repositories.events import insert_event
from .services.images import ImageStudio
from .services.ingestion import IngestOptions
from .services.tokens import TokenCounter
from .services.webfetch import FetchPolicy, WebFetcher
from .services.webpages import WebIngestor
from .settings import GatewaySettings


def build_images(settings: GatewaySettings, sessions: async_sessionmaker[AsyncSession],
                 http: httpx.AsyncClient) -> ImageStudio:
    async def log_event(tenant_id: str, kind: str, value: float, meta: dict[str, Any], request_id: str) -> None:
        # Its own transaction: a failed or cancelled generation is logged too.
        async with sessions.begin() as session:
            await insert_event(session, tenant_id, kind, value=value, meta=meta, request_id=request_id or None)

    client = ImageClient(http, settings.images_base_url(), token=settings.inference_token,
                         timeout_s=settings.images_timeout_s)
    return ImageStudio(client, settings.images_path(), max_side=settings.image_max_side,
                       max_steps=settings.image_max_steps, log_event=log_event)


def fetch_policy(settings: GatewaySettings) -> FetchPolicy:
    return FetchPolicy(allowed_hosts=settings.url_allowed_hosts(), allowed_networks=settings.url_allowed_networks(),
                       max_bytes=int(settings.url_max_mb * 1024 * 1024), timeout_s=settings.url_timeout_s,
                       host_interval_s=settings.url_host_interval_s, host_concurrency=settings.url_host_concurrency,
                       max_redirects=settings.url_max_redirects, user_agent=settings.url_user_agent)


def build_web(settings: GatewaySettings, inference: InferenceClient, counter: TokenCounter,
              fetcher: WebFetcher | None = None) -> WebIngestor:
    options = IngestOptions(counter=counter, chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap,
                            max_bytes=int(settings.url_max_mb * 1024 * 1024))
    return WebIngestor(fetcher or WebFetcher(fetch_policy(settings)), inference, options,
                       max_pages=settings.url_max_pages, max_depth=settings.url_max_depth)
