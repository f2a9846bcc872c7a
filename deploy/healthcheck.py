#!/usr/bin/env python3
"""Container health probes for the AION images (standard library only; psycopg for `db`).

    healthcheck.py http URL [--json-status ready]   # 200, and JSON "status" equal to the value if given
    healthcheck.py db                               # DATABASE_URL accepts a connection and SELECT 1

`${VAR:-default}` and `${VAR}` in URL are expanded from the environment, so one image-level
HEALTHCHECK follows AION_PORT / AION_GATEWAY_PORT when compose changes them. Exit 0 = healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def expand(text: str) -> str:
    """Replace ${VAR} and ${VAR:-default} with values from the environment."""
    return _VAR.sub(lambda m: os.environ.get(m["name"]) or (m["default"] or ""), text)


def check_http(url: str, json_status: str | None, timeout: float) -> str | None:
    """None when healthy, else the reason."""
    try:
        with urllib.request.urlopen(expand(url), timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"unreachable: {exc}"
    if json_status is None:
        return None
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        return "response is not a JSON object"
    return None if status == json_status else f"status is {status!r}, waiting for {json_status!r}"


def check_db(timeout: float) -> str | None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return "DATABASE_URL is not set"
    # SQLAlchemy-style driver suffixes mean nothing to libpq.
    url = re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure is "unhealthy"; the reason goes to `docker inspect`
        return f"database: {type(exc).__name__}: {exc}".splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=4.0)
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("--json-status")
    sub.add_parser("db")
    args = parser.parse_args(argv)
    reason = check_http(args.url, args.json_status, args.timeout) if args.kind == "http" else check_db(args.timeout)
    if reason:
        sys.stderr.write(f"unhealthy: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
