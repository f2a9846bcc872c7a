"""Which calls need a key, which role they need, and which rate-limit bucket they draw from.

Decided on the path before routing, so a refused caller never gets to send a body (an upload can be
hundreds of MB) and routes added later are admin-only until someone lists them here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from .principal import Role

# Everything under these needs a key; pages, static files and /health stay open (the pages are
# shells that call the API with the key the person pastes in).
PROTECTED_PREFIXES = ("/api/", "/v1/")
PROTECTED_PATHS = frozenset({"/metrics"})

# What a `user` key may call: ask, search, rate answers, read the documents answers come from, keep its
# own conversations (the routes show a user key only the conversations it began), and images.
# Every other protected route (upload and delete documents, export, training, adapters, budget,
# admin data, metrics) needs `admin`.
_USER_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (method, re.compile(pattern)) for method, pattern in (
        ("POST", r"/api/ai/chat"),
        # A key (or a token) exchanged for a token: the pages keep that instead of the key.
        ("POST", r"/api/auth/token"),
        ("GET", r"/api/ai/chat/stream"),
        ("POST", r"/api/ai/chat/stream"),
        # The chat page's limits and the models a conversation may choose.
        ("GET", r"/api/ai/chat/options"),
        ("POST", r"/v1/chat/completions"),
        ("POST", r"/api/ai/search"),
        ("POST", r"/api/ai/feedback"),
        ("GET", r"/api/ai/documents"),
        ("GET", r"/api/ai/documents/[^/]+"),
        ("GET", r"/api/ai/conversations"),
        ("GET", r"/api/ai/conversations/[^/]+"),
        ("PATCH", r"/api/ai/conversations/[^/]+"),
        ("DELETE", r"/api/ai/conversations/[^/]+"),
        # Images: make them, see the gallery, follow or stop a generation; deleting one needs admin.
        ("POST", r"/api/generate-image"),
        ("GET", r"/api/images"),
        ("GET", r"/api/images/[^/]+"),
        ("GET", r"/api/images/jobs/[^/]+"),
        ("POST", r"/api/images/jobs/[^/]+/cancel"),
    ))

# Calls that run a model draw from the chat bucket.
_CHAT_PATHS = frozenset({"/api/ai/chat", "/api/ai/chat/stream", "/v1/chat/completions", "/api/generate-image"})

Bucket = Literal["chat", "api"]


def route_path(scope: Mapping[str, Any]) -> str:
    """The path the router matches (without a proxy's root_path), so the policy sees what routing sees."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) or path in PROTECTED_PATHS


def required_role(method: str, path: str) -> Role:
    method = "GET" if method == "HEAD" else method
    if any(m == method and pattern.fullmatch(path) for m, pattern in _USER_ROUTES):
        return "user"
    return "admin"


def bucket(path: str) -> Bucket:
    """Chat calls run the model (and may spend money): they get a bucket of their own."""
    return "chat" if path in _CHAT_PATHS else "api"
