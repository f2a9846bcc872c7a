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
    p.add_argument("--json", action="store_true",
                   help="print one JSON object for scripts (answer, sources with scores, confidence, who answered, "
                        "ids) and nothing else on stdout")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from ._answer import script_answer, stream_answer
    from ._http import error_message, gateway_client, unreachable

    body: dict = {"message": args.question}
    if args.fallback:
        body["forceFallback"] = True
    if args.tau is not None:
        body["tau"] = args.tau
    if args.conversation:
        body["conversation_id"] = args.conversation
    with gateway_client(args.url, 600.0) as client:
        try:
            if args.json:
                r = client.post("/api/ai/chat", json=body)
                if r.status_code != 200:
                    sys.stderr.write(f"aion: {error_message(r)}\n")
                    return 1
                sys.stdout.write(json.dumps(script_answer(r.json()), ensure_ascii=False, indent=2) + "\n")
                return 0
            return 0 if stream_answer(client, body, sys.stdout, sys.stderr).done is not None else 1
        except httpx.ConnectError as exc:
            return unreachable(client, exc)
