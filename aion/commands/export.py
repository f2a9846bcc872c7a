"""`aion export --days N --out FILE` — logged answers as training JSONL (through the gateway)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export logged answers as training JSONL")
    p.add_argument("--days", type=int, default=1, help="how many days back (default 1)")
    p.add_argument("--out", required=True, type=Path, help="file to write (replaced atomically)")
    p.add_argument("--format", choices=["chat", "seed"], default="chat",
                   help='chat: {"messages": [...]} (TRL, axolotl, LLaMA-Factory); seed: {kind, meta: {prompt, reply}}')
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from services.gateway.services.export import write_jsonl_atomically

    from ._http import error_message, gateway_client, unreachable

    with gateway_client(args.url, 300.0) as client:
        try:
            r = client.get("/api/ai/metrics/export.jsonl", params={"days": args.days, "format": args.format})
        except httpx.ConnectError as exc:
            return unreachable(client, exc)
    if r.status_code != 200:
        sys.stderr.write(f"aion: {error_message(r)}\n")
        return 1
    import json

    rows = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    try:
        write_jsonl_atomically(args.out, rows)
    except OSError as exc:
        sys.stderr.write(f"aion: cannot write {args.out}: {exc.strerror or exc}; the previous file is intact\n")
        return 1
    sys.stdout.write(f"{len(rows)} rows written to {args.out} (skipped: {r.headers.get('x-aion-skipped', '{}')})\n")
    return 0
