"""Keeps secrets out of log records, whatever logger or handler they go through.

The code never logs a key or a token on purpose; this is the net under it: a third-party library's
debug line, an exception message holding a URL with a password, a key pasted into a query string.
It is a log-record factory, so it applies before any handler (JSON, text, pytest's) sees the record.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"
# Gateway API keys and bearer credentials, whoever's they are.
_PATTERNS = (re.compile(r"aion_[A-Za-z0-9_-]{43}"), re.compile(r"(?i)(bearer\s+)[^\s'\",]+"))
# Shorter values are too likely to occur in ordinary text to be replaced everywhere.
_MIN_SECRET_LEN = 8

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(REDACTED, text)
    return _PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)


def register_secrets(values: Iterable[str | None]) -> None:
    """Add values that must never appear in a log line, and install the record factory once."""
    global _installed
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LEN)
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _scrub(record)
            return record

        logging.setLogRecordFactory(factory)


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call; logging reports it itself later
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            # Formatters print exc_text when it is set; dropping exc_info keeps them from re-rendering it.
            record.exc_text, record.exc_info = clean, None
