"""Document routes: upload (one or many files), list, read, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from shared.errors import BadRequest, NotFound, error_body

from ..deps import InferenceDep, SessionDep, SettingsDep, StateDep, TenantDep
from ..repositories import chunks as chunks_repo
from ..repositories import documents as documents_repo
from ..schemas import (
    ChunkPublic,
    DocumentDeleted,
    DocumentDetail,
    DocumentPage,
    DocumentPublic,
    FileResultPublic,
    IngestResponse,
)
from ..services.ingestion import FileResult, IngestOptions, Upload, ingest_uploads

router = APIRouter(prefix="/api/ai/documents", tags=["documents"])

# Postgres OFFSET is a bigint: a larger value is a database error (500), not an empty page.
MAX_OFFSET = 10**12


@router.post("", response_model=IngestResponse, status_code=200,
             responses={207: {"description": "some files ingested, some refused"},
                        413: {"description": "over the size limit"}, 415: {"description": "unsupported type"}})
async def upload_documents(
    request: Request,
    files: Annotated[list[UploadFile], File(description="one or more files (.txt .md .pdf .html .docx)")],
    session: SessionDep, inference: InferenceDep, settings: SettingsDep, state: StateDep, tenant: TenantDep,
) -> JSONResponse:
    if len(files) > settings.max_upload_files:
        raise BadRequest(f"{len(files)} files in one request; at most {settings.max_upload_files} "
                         "(AION_MAX_UPLOAD_FILES) — send them in several requests", code="too_many_files")
    limit = settings.max_upload_bytes
    uploads = []
    for f in files:
        data = await f.read(limit + 1)  # one byte past the limit is enough to refuse it
        uploads.append(Upload(f.filename or "", f.content_type, data, max(f.size or 0, len(data))))
        await f.close()
    options = IngestOptions(counter=state.token_counter, chunk_tokens=settings.chunk_tokens,
                            chunk_overlap=settings.chunk_overlap, max_bytes=limit, limits=settings.extract_limits())
    results = await ingest_uploads(session, inference, tenant, uploads, options)
    return _ingest_response(results)


def _ingest_response(results: list[FileResult]) -> JSONResponse:
    ok = [r for r in results if r.ok]
    body = IngestResponse(results=[FileResultPublic.model_validate(r) for r in results], ingested=len(ok),
                          refused=len(results) - len(ok)).model_dump(mode="json")
    if len(ok) == len(results):
        return JSONResponse(body, status_code=201 if any(r.status == "created" for r in ok) else 200)
    if ok:
        return JSONResponse(body, status_code=207)
    # Nothing ingested: an error status (the files' own when they agree) and an OpenAI-shaped error
    # beside the per-file results, so both kinds of client read it.
    statuses = {r.http_status for r in results}
    status = statuses.pop() if len(statuses) == 1 else (503 if any(s >= 500 for s in statuses) else 422)
    first = results[0]
    message = (f"{first.filename}: {first.reason}" if len(results) == 1
               else f"none of the {len(results)} files was ingested; see results for each file's reason")
    error = error_body(message, (first.code or "refused") if len(results) == 1 else "files_refused",
                       "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({**error, **body}, status_code=status)


@router.get("", response_model=DocumentPage)
async def list_documents(session: SessionDep, tenant: TenantDep,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> DocumentPage:
    items, total = await documents_repo.list_page(session, tenant, limit=limit, offset=offset)
    return DocumentPage(items=[DocumentPublic.model_validate(d) for d in items], total=total, limit=limit,
                        offset=offset)


@router.get("/{document_id}", response_model=DocumentDetail)
async def get_document(document_id: uuid.UUID, session: SessionDep, tenant: TenantDep,
                       chunks: Annotated[bool, Query(description="include the document's chunks")] = False,
                       ) -> DocumentDetail:
    document = await documents_repo.get(session, tenant, document_id)
    if document is None:
        raise NotFound(f"no document with id {document_id}")
    detail = DocumentDetail(**DocumentPublic.model_validate(document).model_dump())
    if chunks:
        rows = await chunks_repo.list_for_document(session, tenant, document_id)
        detail.chunks = [ChunkPublic.model_validate(c) for c in rows]
    return detail


@router.delete("/{document_id}", response_model=DocumentDeleted)
async def delete_document(document_id: uuid.UUID, session: SessionDep, tenant: TenantDep) -> DocumentDeleted:
    chunk_count = await chunks_repo.count_for_document(session, tenant, document_id)
    deleted = await documents_repo.delete_document(session, tenant, document_id)
    if deleted is None:
        raise NotFound(f"no document with id {document_id}")
    return DocumentDeleted(id=document_id, chunks_deleted=chunk_count)
