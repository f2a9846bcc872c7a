"""Web pages as documents: fetch (webfetch.py), ingest like an upload, remember how to re-fetch.

A page's document is named by its URL, so the upload path's rules apply unchanged: the same bytes as
a stored document are a duplicate, new bytes under the same URL replace the old chunks in one step.
`depth` follows links on allowlisted hosts, breadth first, up to AION_URL_MAX_PAGES pages. A page with a
`refresh` cadence is re-fetched by the scheduler with its ETag / Last-Modified, so an unchanged page
costs one 304 and no embedding.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import WebPage
from shared.errors import AionError, BadRequest

from ..clients.inference import InferenceClient
from ..repositories import webpages as pages_repo
from .ingestion import IngestOptions, Upload, ingest_uploads
from .webfetch import FetchedPage, WebFetcher, absolute_links, check_url

logger = logging.getLogger(__name__)

PageStatus = Literal["created", "replaced", "duplicate", "unchanged", "refused", "failed"]

_REFRESH = re.compile(r"^\s*(?:(never)|(\d{1,4})\s*([hd]))\s*$", re.IGNORECASE)


def parse_refresh(value: str | None) -> int | None:
    """`"6h"`, `"1d"`, `"never"` (or nothing) -> seconds between re-fetches, or None."""
    if value is None:
        return None
    m = _REFRESH.match(value)
    if not m or (m.group(2) and int(m.group(2)) == 0):
        raise BadRequest(f"refresh must be 'never' or a number of hours or days such as '6h' or '7d'; got "
                         f"'{value[:40]}'", code="invalid_refresh")
    if m.group(1):
        return None
    return int(m.group(2)) * (3600 if m.group(3).lower() == "h" else 86400)


@dataclass
class PageResult:
    url: str
    status: PageStatus
    http_status: int
    depth: int = 0
    document_id: uuid.UUID | None = None
    chunk_count: int | None = None
    title: str | None = None
    reason: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("created", "replaced", "duplicate", "unchanged")


@dataclass
class _Fetched:
    result: PageResult
    links: list[str]


class WebIngestor:
    def __init__(self, fetcher: WebFetcher, inference: InferenceClient, options: IngestOptions, *,
                 max_pages: int, max_depth: int, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.fetcher = fetcher
        self.inference = inference
        self.options = options
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.now = now

    async def ingest(self, session: AsyncSession, tenant_id: str, url: str, *, depth: int = 0,
                     refresh: str | None = None) -> list[PageResult]:
        """The page, and with `depth` the allowlisted pages it links to; one result per page tried."""
        if depth > self.max_depth:
            raise BadRequest(f"depth {depth} is over the limit of {self.max_depth} (AION_URL_MAX_DEPTH)",
                             code="depth_too_large")
        refresh_seconds = parse_refresh(refresh)
        start = str(check_url(url))
        results: list[PageResult] = []
        queue, seen = [(start, 0)], {start}
        while queue and len(results) < self.max_pages:
            current, level = queue.pop(0)
            fetched = await self._one(session, tenant_id, current, refresh_seconds, level)
            results.append(fetched.result)
            if level < depth:
                for link in fetched.links:
                    if link not in seen and self._followable(link):
                        seen.add(link)
                        queue.append((link, level + 1))
        return results

    def _followable(self, link: str) -> bool:
        try:
            return self.fetcher.policy.host_allowed(check_url(link).host)
        except BadRequest:
            return False

    async def refresh_due(self, sessions: async_sessionmaker[AsyncSession], *, limit: int = 100) -> list[PageResult]:
        """Re-fetch pages whose cadence is due, each in its own transaction (a failure keeps the old text)."""
        results: list[PageResult] = []
        for _ in range(limit):
            async with sessions.begin() as session:
                due = await pages_repo.list_due(session, self.now(), limit=1)
                if not due:
                    break
                page = due[0]
                results.append((await self._one(session, page.tenant_id, page.url, page.refresh_seconds, 0,
                                                known=page)).result)
        return results

    async def _one(self, session: AsyncSession, tenant_id: str, url: str, refresh_seconds: int | None, depth: int,
                   known: WebPage | None = None) -> _Fetched:
        page = known or await pages_repo.get_by_url(session, tenant_id, url)
        now = self.now()
        next_fetch = now + timedelta(seconds=refresh_seconds) if refresh_seconds else None
        tracked = {"refresh_seconds": refresh_seconds, "fetched_at": now, "next_fetch_at": next_fetch}
        try:
            # Validators only when the page's document still exists: otherwise a 304 would leave nothing.
            conditional = page is not None and page.document_id is not None
            fetched = await self.fetcher.fetch(url, etag=page.etag if conditional else None,
                                               last_modified=page.last_modified if conditional else None)
        except AionError as exc:
            result = PageResult(url, "refused" if exc.status_code < 500 else "failed", exc.status_code, depth,
                                reason=exc.message, code=exc.code)
            if page is not None:  # a known page keeps its document; the error is noted for the next try
                await pages_repo.record(session, page.id, last_status=result.status, last_error=exc.message,
                                        **tracked)
            logger.info("web page %s %s: %s", url, result.status, exc.message)
            return _Fetched(result, [])

        sha256 = hashlib.sha256(fetched.data).hexdigest() if fetched.status == 200 else None
        if page is not None and page.document_id is not None and (
                fetched.status == 304 or sha256 == page.content_sha256):
            await pages_repo.record(session, page.id, last_status="unchanged", last_error=None, etag=fetched.etag,
                                    last_modified=fetched.last_modified, **tracked)
            return _Fetched(PageResult(url, "unchanged", 200, depth, document_id=page.document_id), [])

        upload = Upload(filename=_file_name(fetched), content_type=fetched.content_type, data=fetched.data,
                        size=len(fetched.data), source_name=url)
        (file_result,) = await ingest_uploads(session, self.inference, tenant_id, [upload], self.options)
        result = PageResult(url, file_result.status, file_result.http_status, depth,
                            document_id=file_result.document_id, chunk_count=file_result.chunk_count,
                            title=file_result.title, reason=file_result.reason, code=file_result.code)
        if result.ok:
            await pages_repo.upsert(session, tenant_id, url, document_id=file_result.document_id, etag=fetched.etag,
                                    last_modified=fetched.last_modified, content_sha256=sha256,
                                    last_status=result.status, last_error=None, **tracked)
        elif page is not None:
            await pages_repo.record(session, page.id, last_status=result.status, last_error=result.reason, **tracked)
        links = _links(fetched) if result.ok else []
        return _Fetched(result, links)


def _file_name(page: FetchedPage) -> str:
    """A name whose extension tells the extractor the type (the URL's own may say .php, or nothing)."""
    stem = PurePosixPath(check_url(page.url).path).stem or "index"
    return f"{stem}{page.suffix}"


def _links(page: FetchedPage) -> list[str]:
    if page.suffix != ".html":
        return []
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.data, "html.parser")
    hrefs = [str(a.get("href")) for a in soup.find_all("a", href=True)]
    return absolute_links(page.url, hrefs)

