"""`POST /api/ai/documents/url`: a web page (and, with depth, the pages it links to) into the knowledge base."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.errors import error_body

from ..deps import SessionDep, StateDep, TenantDep
from ..services.webpages import PageResult
from ..web_schemas import PageResultPublic, UrlIngestRequest, UrlIngestResponse

router = APIRouter(prefix="/api/ai/documents", tags=["documents"])


@router.post("/url", response_model=UrlIngestResponse,
             responses={207: {"description": "some pages ingested, some refused"},
                        403: {"description": "host not allowed, private address or robots.txt"}})
async def ingest_url(body: UrlIngestRequest, session: SessionDep, state: StateDep, tenant: TenantDep) -> JSONResponse:
    results = await state.web.ingest(session, tenant, body.url, depth=body.depth, refresh=body.refresh)
    return _response(results)


def _response(results: list[PageResult]) -> JSONResponse:
    ok = [r for r in results if r.ok]
    body = UrlIngestResponse(results=[PageResultPublic.model_validate(r) for r in results], ingested=len(ok),
                             refused=len(results) - len(ok)).model_dump(mode="json")
    if len(ok) == len(results):
        return JSONResponse(body, status_code=201 if any(r.status == "created" for r in ok) else 200)
    if ok:
        return JSONResponse(body, status_code=207)
    # Nothing ingested: the first page's own status and reason, OpenAI-shaped, beside the results.
    first = results[0]
    error = error_body(f"{first.url}: {first.reason}", first.code or "refused",
                       "invalid_request_error" if first.http_status < 500 else "server_error")
    return JSONResponse({**error, **body}, status_code=first.http_status)
