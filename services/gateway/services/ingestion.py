"""Ingestion: file -> text blocks -> chunks -> embeddings -> one document with its chunks, atomically.

Per file: refuse what cannot be used (with the reason and an HTTP status), return the existing document
for content already stored, and otherwise write the document and all of its chunks inside a savepoint,
so a failure part-way leaves nothing behind and a re-upload under the same name swaps the old chunks
for the new ones in one step. Embedding happens before the write, outside any lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Document
from shared.errors import AionError

from ..clients.inference import InferenceClient
from ..repositories import chunks as chunks_repo
from ..repositories import documents as documents_repo
from .chunking import ChunkDraft, chunk_blocks
from .extract import ExtractLimits, Refused, detect_kind, extract
from .tokens import TokenCounter

logger = logging.getLogger(__name__)

Status = Literal["created", "replaced", "duplicate", "refused", "failed"]


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    data: bytes
    size: int  # may exceed len(data) when the route stopped reading at the limit
    # Stored as is instead of the cleaned file name (a web page's URL); the file name still gives the type.
    source_name: str | None = None


@dataclass(frozen=True)
class IngestOptions:
    counter: TokenCounter
    chunk_tokens: int = 200
    chunk_overlap: int = 40
    max_bytes: int = 20 * 1024 * 1024
    limits: ExtractLimits = field(default_factory=ExtractLimits)


@dataclass
class FileResult:
    filename: str
    status: Status
    http_status: int
    document_id: uuid.UUID | None = None
    chunk_count: int | None = None
    title: str | None = None
    reason: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("created", "replaced", "duplicate")


@dataclass
class PreparedDocument:
    source_name: str
    title: str | None
    mime_type: str
    sha256: str
    size_bytes: int
    drafts: list[ChunkDraft]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_source_name(filename: str | None) -> str:
    """A display name only (never a path AION opens): slashes normalized, control characters dropped."""
    name = _CONTROL.sub("", (filename or "").replace("\\", "/")).strip()
    name = re.sub(r"/{2,}", "/", name)
    name = re.sub(r"^(\./|/)+", "", name)
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts)[-255:] or "upload"


@dataclass
class _Pending:
    """A file that passed every check and awaits its embeddings."""

    index: int
    name: str
    prepared: PreparedDocument
    started: float


async def ingest_uploads(session: AsyncSession, client: InferenceClient, tenant_id: str,
                         uploads: Sequence[Upload], options: IngestOptions) -> list[FileResult]:
    """Each file on its own: a refused or failed file does not stop the others.

    The chunks of all accepted files are embedded together, in full batches (a folder of small
    files would otherwise send many small, padding-heavy batches); each file is then stored in its
    own savepoint, so a file whose embeddings failed leaves nothing behind while the others land.
    """
    results: list[FileResult | None] = [None] * len(uploads)
    pending: list[_Pending] = []
    for index, upload in enumerate(uploads):
        name = upload.source_name or clean_source_name(upload.filename)
        started = time.perf_counter()
        outcome = await _guard(name, _prepare(session, tenant_id, name, upload, options))
        if isinstance(outcome, PreparedDocument):
            pending.append(_Pending(index, name, outcome, started))
        else:
            results[index] = outcome

    texts = [d.embed_text for p in pending for d in p.prepared.drafts]
    vectors, failure = await _embed_until_failure(client, texts)
    offset = 0
    for p in pending:
        n = len(p.prepared.drafts)
        if offset + n > len(vectors):
            assert failure is not None
            results[p.index] = _failed(p.name, failure)
        else:
            p.prepared.vectors = vectors[offset:offset + n]
            results[p.index] = await _guard(p.name, _store(session, tenant_id, p.prepared))
            logger.info("%s %s: %d chunks in %.0f ms", results[p.index].status, p.name, n,  # type: ignore[union-attr]
                        (time.perf_counter() - p.started) * 1000)
        offset += n
    return [r for r in results if r is not None]


async def _guard(name: str, step: Awaitable[Any]) -> Any:
    """Run one file's step; expected problems become that file's result, never the request's."""
    try:
        return await step
    except AionError as exc:
        return _failed(name, exc)
    except Exception:
        logger.exception("ingesting %s failed", name)
        return FileResult(name, "failed", 500, reason="internal error while ingesting; see the gateway log",
                          code="internal_error")


def _failed(name: str, exc: AionError) -> FileResult:
    status: Status = "refused" if exc.status_code < 500 else "failed"
    logger.info("%s %s: %s", status, name, exc.message)
    return FileResult(name, status, exc.status_code, reason=exc.message, code=exc.code)


async def _embed_until_failure(client: InferenceClient, texts: list[str]) -> tuple[np.ndarray, AionError | None]:
    """Embeddings batch by batch; on a failure, those obtained so far and the error."""
    parts: list[np.ndarray] = []
    for i in range(0, len(texts), client.batch_size):
        try:
            parts.append(await client.embed(texts[i:i + client.batch_size]))
        except AionError as exc:
            return (np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)), exc
    return (np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)), None


async def _prepare(session: AsyncSession, tenant_id: str, name: str, upload: Upload,
                   options: IngestOptions) -> PreparedDocument | FileResult:
    """Checks, de-duplication, extraction and chunking: a document ready for its embeddings."""
    if upload.size > options.max_bytes or len(upload.data) > options.max_bytes:
        raise Refused(f"the file is {upload.size / 1048576:.1f} MiB; the limit is "
                      f"{options.max_bytes / 1048576:.1f} MiB (AION_MAX_UPLOAD_MB)", status_code=413,
                      code="file_too_large")
    kind = detect_kind(clean_source_name(upload.filename) if upload.source_name else name, upload.content_type)
    if not upload.data.strip():
        raise Refused("the file is empty", status_code=400, code="empty_file")
    sha256 = hashlib.sha256(upload.data).hexdigest()
    existing = await documents_repo.get_by_sha256(session, tenant_id, sha256)
    if existing is not None:
        return _duplicate(name, existing)

    extracted = await anyio.to_thread.run_sync(extract, kind, upload.data, name, options.limits)
    drafts = await anyio.to_thread.run_sync(
        lambda: chunk_blocks(extracted.blocks, options.counter, max_tokens=options.chunk_tokens,
                             overlap=options.chunk_overlap))
    if not drafts:
        raise Refused("no text found in the file", status_code=422, code="no_text")
    return PreparedDocument(
        source_name=name, title=extracted.title, mime_type=kind.mime_type, sha256=sha256,
        size_bytes=len(upload.data), drafts=drafts, vectors=np.zeros((0, 0), dtype=np.float32),
        meta={**extracted.meta, "tokenizer": options.counter.name, "chunk_tokens": options.chunk_tokens,
              "chunk_overlap": options.chunk_overlap})


async def _store(session: AsyncSession, tenant_id: str, prepared: PreparedDocument) -> FileResult:
    try:
        document, replaced = await store_document(session, tenant_id, prepared)
    except IntegrityError:
        # Another request (or an earlier file of this one) stored the same content or name first.
        existing = await documents_repo.get_by_sha256(session, tenant_id, prepared.sha256)
        if existing is not None:
            return _duplicate(prepared.source_name, existing)
        document, replaced = await store_document(session, tenant_id, prepared)
    return FileResult(prepared.source_name, "replaced" if replaced else "created", 200 if replaced else 201,
                      document_id=document.id, chunk_count=len(prepared.drafts), title=document.title)


def _duplicate(name: str, existing: Document) -> FileResult:
    same = existing.source_name == name
    reason = None if same else f"same content as '{existing.source_name}', already ingested"
    return FileResult(name, "duplicate", 200, document_id=existing.id, chunk_count=existing.chunk_count,
                      title=existing.title, reason=reason)


async def store_document(session: AsyncSession, tenant_id: str, prepared: PreparedDocument) -> tuple[Document, bool]:
    """Write the document and all of its chunks in one savepoint; returns (document, replaced_existing).

    If any statement fails, the savepoint is rolled back: no new document, no partial chunks, and a
    document being replaced keeps its old chunks.
    """
    async with session.begin_nested():
        values = {"title": prepared.title, "mime_type": prepared.mime_type, "sha256": prepared.sha256,
                  "size_bytes": prepared.size_bytes, "chunk_count": len(prepared.drafts), "meta": prepared.meta}
        document = await documents_repo.get_by_name_for_update(session, tenant_id, prepared.source_name)
        replaced = document is not None
        if document is not None:
            await chunks_repo.delete_for_document(session, tenant_id, document.id)
            document = await documents_repo.update_content(session, document, **values)
        else:
            document = await documents_repo.insert(session, id=uuid.uuid4(), tenant_id=tenant_id,
                                                   source_name=prepared.source_name, **values)
        await chunks_repo.insert_many(session, tenant_id, [
            chunks_repo.ChunkRow(document_id=document.id, ord=d.ord, text=d.text, heading=d.heading, page=d.page,
                                 token_count=d.token_count, embedding=v)
            for d, v in zip(prepared.drafts, prepared.vectors, strict=True)])
    return document, replaced
