"""With AION_AUTH=off every caller is admin, so what may call must be narrowed by other means:

- DNS rebinding: a web page on evil.example can make its own name resolve to 127.0.0.1 and then read
  and drive the gateway as if it were same-origin. Its requests carry `Host: evil.example`, so only
  loopback names (localhost, *.localhost, 127.0.0.0/8, ::1) are answered.
- Cross-site writes: any page may POST a form or a no-CORS fetch to http://127.0.0.1:3000 (it cannot
  read the answer, but the upload or delete happens). A state-changing request that a browser marks
  as coming from another site or origin (Sec-Fetch-Site, else Origin) is refused unless its origin
  is listed in AION_CORS_ORIGINS. Clients that are not browsers send neither header and pass.

With auth on, every call needs a bearer credential that a browser never attaches by itself, and a
proxy in front may rewrite Host: none of this applies.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_body

from ..settings import GatewaySettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback_host(host: str) -> bool:
    """`host` is a Host header's value (name or address, maybe with a port)."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:3000
        name = host[1:host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LocalOnlyMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.allowed_origins = frozenset(o.rstrip("/") for o in settings.cors_origin_list())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        code, message = refusal
        await JSONResponse(error_body(message, code, "invalid_request_error"), status_code=403)(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[str, str] | None:
        host = headers.get("host")
        if host is not None and not is_loopback_host(host):
            return ("host_not_loopback",
                    f"Host '{host}' is not a loopback name: with AION_AUTH=off this gateway answers only requests "
                    "addressed to localhost, 127.0.0.1 or [::1] (any web site could reach it otherwise, through DNS "
                    "rebinding); open it as http://localhost:PORT, or set AION_AUTH=on")
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin and origin.rstrip("/") in self.allowed_origins:
            return None
        site = headers.get("sec-fetch-site")
        cross = (site in ("cross-site", "same-site") if site is not None
                 else origin is not None and not _same_origin(origin, scope, host))
        if cross:
            return ("cross_origin_request",
                    f"a {scope['method']} from another site or origin ({origin or site}) is refused: with AION_AUTH=off "
                    "only the gateway's own pages may change anything; list trusted origins in AION_CORS_ORIGINS "
                    "or set AION_AUTH=on")
        return None


def _same_origin(origin: str, scope: Scope, host: str | None) -> bool:
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme == scope.get("scheme", "http") and parts.netloc.lower() == host.strip().lower()
