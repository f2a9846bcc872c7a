"""API key format and hashing: `aion_<43 url-safe characters>`, stored as a SHA-256 hex digest."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "aion_"
# 32 random bytes (256 bits): guessing is hopeless, so a fast unsalted hash is enough to store it;
# a slow password hash (bcrypt, argon2) only matters for secrets people choose.
_RANDOM_BYTES = 32
_KEY_RE = re.compile(r"aion_[A-Za-z0-9_-]{43}")
# Shown in listings and logs: enough to tell keys apart, far too little to guess the rest.
DISPLAY_CHARS = len(KEY_PREFIX) + 8


@dataclass(frozen=True)
class NewKey:
    key: str  # the secret: shown once, never stored
    prefix: str
    hash: str


def generate_key() -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
    return NewKey(key=key, prefix=display_prefix(key), hash=hash_key(key))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]


def looks_like_key(value: str) -> bool:
    """Cheap format check before any database lookup."""
    return _KEY_RE.fullmatch(value) is not None
