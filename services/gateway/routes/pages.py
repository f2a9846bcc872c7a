"""The web pages: the chat at `/`, the admin panel at `/admin`, one document at `/documents/{id}`, and
their static files.

Plain HTML, JS modules and CSS shipped as package data: nothing to build, nothing fetched from a CDN.
The browser libraries (markdown, its sanitizer, code highlighting) are vendored under static/vendor/
by scripts/vendor_web.sh. The pages hold no data and no secrets; every call they make goes through the
API (and its auth).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from shared.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
# Scripts and styles only from this origin: a passage or answer that smuggles in markup cannot run code
# (the pages sanitize what they render as well; this is the second wall).
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# Revalidate on every load (the ETag makes that cheap) so an upgraded gateway never serves stale JS.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _file(name: str, folder: Path = STATIC_DIR) -> FileResponse:
    path = folder / name
    media_type = _MEDIA_TYPES.get(path.suffix)
    # Only plain file names of the shipped folder: no sub-paths, no other types.
    if "/" in name or "\\" in name or media_type is None or not path.is_file():
        raise NotFound(f"no static file '{name}'")
    headers = dict(_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = _CSP
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/")
async def chat_page() -> FileResponse:
    return _file("chat.html")


@router.get("/admin")
async def admin_page() -> FileResponse:
    return _file("admin.html")


@router.get("/documents/{document_id}")
async def document_page(document_id: uuid.UUID) -> FileResponse:
    """One document's passages (its data comes from GET /api/ai/documents/{id}, with the reader's key)."""
    return _file("document.html")


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    return _file(name)


@router.get("/static/vendor/{name}")
async def vendor_file(name: str) -> FileResponse:
    return _file(name, STATIC_DIR / "vendor")
