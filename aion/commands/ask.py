"""`aion ask "question"` — a grounded answer streamed from the gateway, then its sources."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question (answer streamed from the gateway, with sources)")
    p.add_argument("question")
    p.add_argument("--tau", type=float, help="confidence threshold for this question (0..1)")
    p.add_argument("--fallback", action="store_true", help="force the paid fallback (within the budget; admin keys)")
    p.add_argument("--conversation", metavar="ID", help="continue this stored conversation (its id is printed "
                                                         "after every answer)")
    p.add_argument("--json", action="store_true", help="print the final JSON instead of streaming")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from ._http import error_message, gateway_client, unreachable

    body: dict = {"message": args.question}
    if args.fallback:
        body["forceFallback"] = True
    if args.tau is not None:
        body["tau"] = args.tau
    if args.conversation:
        body["conversation_id"] = args.conversation
    out = sys.stdout
    with gateway_client(args.url, 600.0) as client:
        try:
            if args.json:
                r = client.post("/api/ai/chat", json=body)
                if r.status_code != 200:
                    sys.stderr.write(f"aion: {error_message(r)}\n")
                    return 1
                out.write(json.dumps(r.json(), ensure_ascii=False, indent=2) + "\n")
                return 0
            return _stream(client, body, out)
        except httpx.ConnectError as exc:
            return unreachable(client, exc)


def _stream(client, body: dict, out) -> int:
    from ._http import error_message

    sources: list[dict] = []
    event = "message"
    with client.stream("POST", "/api/ai/chat/stream", json=body) as r:
        if r.status_code != 200:
            r.read()
            sys.stderr.write(f"aion: {error_message(r)}\n")
            return 1
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if event == "sources":
                sources = data["sources"]
            elif event == "token":
                out.write(data["text"])
                out.flush()
            elif event == "warn":
                note = data.get("message") or data["reason"]
                sys.stderr.write(f"\n[warning: {data['reason']}] {note if note != data['reason'] else ''}\n")
                if data.get("restart"):
                    out.write("\n--- (the answer starts over; the text above is withdrawn) ---\n")
            elif event == "error":
                sys.stderr.write(f"\naion: {data['message']}\n")
                return 1
            elif event == "done":
                out.write(f"\n\n({describe(data)})\n")
    for s in sources:
        where = f" — {s['page_or_heading']}" if s.get("page_or_heading") else ""
        out.write(f"[{s['n']}] {s['title']}{where}  ({s['score']:.3f})\n")
    return 0


def describe(done: dict) -> str:
    """Who answered and the two numbers, named: retrieval match (C) and answer support."""
    who = {"local": "local model", "fallback": "fallback model"}.get(done.get("used") or "", "")
    if done.get("used") == "documents":
        who = "quoted from the documents" if done.get("answer") == "quoted" else "not found in the documents"
    parts = [who or str(done.get("used"))]
    if done.get("C") is not None:
        parts.append(f"retrieval match {done['C']:.2f}")
    if done.get("support") is not None:
        parts.append(f"answer support {done['support']:.2f}")
    if done.get("conversation_id"):
        parts.append(f"conversation {done['conversation_id']}")
    parts.append(f"request {done['request_id']}")
    return " · ".join(parts)
