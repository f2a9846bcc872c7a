"""`aion ingest PATH|URL...` — send files (and folders, recursively) or web pages to the gateway."""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path

SUPPORTED_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="add files, folders or web pages to the knowledge base (through the gateway)")
    p.add_argument("paths", nargs="+", metavar="PATH|URL",
                   help="files and folders, or http(s) URLs (their hosts must be on the gateway's AION_URL_ALLOWLIST)")
    p.add_argument("--depth", type=int, default=0, help="for URLs: follow links this many levels (default 0)")
    p.add_argument("--refresh", help="for URLs: re-fetch cadence, e.g. 6h or 7d (default: never)")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one request (default 600)")
    p.add_argument("--files-per-request", type=int, default=8,
                   help="files sent together (their chunks are embedded in shared batches; default 8)")
    p.set_defaults(func=run)


def collect(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, name to store) pairs: a folder's files by their path below the folder's parent, so
    re-ingesting the same folder from anywhere replaces rather than duplicates; a file by its name."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            root = path.resolve()
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                rel = file.relative_to(root)
                if file.suffix.lower() in SUPPORTED_SUFFIXES and not any(part.startswith(".") for part in rel.parts):
                    found.append((file, f"{root.name}/{rel.as_posix()}"))
        else:
            found.append((path, path.name))  # sent even if unsupported: the gateway says why it refuses
    return found


def batches(files: list[tuple[Path, str]], max_files: int, max_bytes: int) -> list[list[tuple[Path, str]]]:
    """Files grouped per request: the gateway embeds a request's chunks together, in full batches."""
    groups: list[list[tuple[Path, str]]] = []
    size = 0
    for path, name in files:
        n = path.stat().st_size
        if not groups or len(groups[-1]) >= max_files or size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append((path, name))
        size += n
    return groups


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    import httpx
    from tqdm import tqdm

    from ._http import error_message, gateway_client, unreachable

    urls = [p for p in args.paths if p.startswith(("http://", "https://"))]
    files = collect([Path(p) for p in args.paths if p not in urls])
    status = 0
    if urls:
        status = ingest_urls(urls, args)
        if not files:
            return status
    for path in [f for f, _ in files if not f.is_file()]:
        sys.stderr.write(f"aion: {path}: no such file\n")
    files = [(f, n) for f, n in files if f.is_file()]
    if not files:
        sys.stderr.write("aion: nothing to ingest\n")
        return 1
    counts = {"created": 0, "replaced": 0, "duplicate": 0, "refused": 0, "failed": 0}
    chunks = 0
    with gateway_client(args.url, args.timeout) as client, \
            tqdm(total=len(files), unit="file", file=sys.stderr, disable=None) as bar:
        for group in batches(files, args.files_per_request, 16 * 1024 * 1024):
            bar.set_postfix_str(group[-1][1][-40:])
            try:
                with ExitStack() as stack:
                    parts = [("files", (name, stack.enter_context(path.open("rb")),
                                        mimetypes.guess_type(path.name)[0] or "application/octet-stream"))
                             for path, name in group]
                    response = client.post("/api/ai/documents", files=parts)
                results = response.json()["results"]
            except httpx.ConnectError as exc:
                return unreachable(client, exc)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                reason = error_message(response) if isinstance(exc, (ValueError, KeyError)) else type(exc).__name__
                for _, name in group:
                    tqdm.write(f"failed    {name}: {reason}", file=sys.stderr)
                counts["failed"] += len(group)
                bar.update(len(group))
                continue
            for r in results:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
                if r["status"] in ("created", "replaced"):
                    chunks += r.get("chunk_count") or 0
                detail = f"{r['chunk_count']} chunks" if r.get("chunk_count") is not None else ""
                if r.get("reason"):
                    detail = f"{detail}; {r['reason']}" if detail else r["reason"]
                tqdm.write(f"{r['status']:<9} {r['filename']}: {detail}", file=sys.stderr)
            bar.update(len(group))
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    sys.stdout.write(f"{summary}; {chunks} new chunks\n")
    return status or (0 if counts["refused"] + counts["failed"] == 0 else 1)


def ingest_urls(urls: list[str], args: argparse.Namespace) -> int:
    """Each URL through `POST /api/ai/documents/url`; one line per page fetched."""
    import httpx

    from ._http import error_message, gateway_client, unreachable

    failed = 0
    with gateway_client(args.url, args.timeout) as client:
        for url in urls:
            body = {"url": url, "depth": args.depth, **({"refresh": args.refresh} if args.refresh else {})}
            try:
                response = client.post("/api/ai/documents/url", json=body)
            except httpx.ConnectError as exc:
                return unreachable(client, exc)
            except httpx.HTTPError as exc:
                sys.stderr.write(f"failed    {url}: {type(exc).__name__}\n")
                failed += 1
                continue
            try:
                results = response.json()["results"]
            except (ValueError, KeyError):
                sys.stderr.write(f"failed    {url}: {error_message(response)}\n")
                failed += 1
                continue
            for r in results:
                detail = f"{r['chunk_count']} chunks" if r.get("chunk_count") is not None else ""
                if r.get("reason"):
                    detail = f"{detail}; {r['reason']}" if detail else r["reason"]
                sys.stderr.write(f"{r['status']:<9} {r['url']}: {detail}\n")
                failed += r["status"] in ("refused", "failed")
    return 0 if failed == 0 else 1
