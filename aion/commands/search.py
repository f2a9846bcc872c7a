"""`aion search "question"` — the passages the gateway would answer from, with scores and C."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the knowledge base (through the gateway)")
    p.add_argument("query")
    p.add_argument("-k", type=int, help="passages to show (default AION_TOP_K, 8)")
    p.add_argument("--top-n", type=int, help="ANN candidates before MMR (default AION_TOP_N, 24)")
    p.add_argument("--lambda", dest="lam", type=float, help="MMR relevance/diversity (default 0.7)")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from ._http import error_message, gateway_client, unreachable

    body = {"q": args.query, "k": args.k, "top_n": args.top_n, "lambda": args.lam}
    with gateway_client(args.url, 60.0) as client:
        try:
            response = client.post("/api/ai/search", json={k: v for k, v in body.items() if v is not None})
        except httpx.ConnectError as exc:
            return unreachable(client, exc)
    if response.status_code != 200:
        sys.stderr.write(f"aion: {error_message(response)}\n")
        return 1
    data = response.json()
    if args.json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return 0
    out = [f"C = {data['C']:.3f}  ({len(data['passages'])} passages from {data['candidates']} candidates)"]
    out += [f"warning: {w['message']}" for w in data.get("warnings", [])]
    for p in data["passages"]:
        where = f" — {p['page_or_heading']}" if p.get("page_or_heading") else ""
        found = ", ".join(f"{arm} #{p[key]}" for arm, key in (("ann", "ann_rank"), ("text", "text_rank"))
                          if p.get(key) is not None)
        out.append(f"\n[{p['rank']}] {p['score']:.3f}  {p['document']}{where}  ({found})")
        out.append(textwrap.indent(textwrap.shorten(p["text"], 400, placeholder=" …"), "    "))
    sys.stdout.write("\n".join(out) + "\n")
    return 0
