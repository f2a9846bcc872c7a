"""`aion demo` — ingest the sample documents the project ships, then ask a question about them.

The samples (aion/demo_docs/: a fictional robotics company) are uploaded through the gateway like any
other document, under the names `aion-demo/<file>`. Ingestion skips a file whose bytes it already
holds, so running the demo again adds nothing.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from importlib import resources
from typing import TextIO

DEFAULT_QUESTION = "How long is the Pomelo robot's warranty, and what does it cover?"
# Names the uploads get: one folder-like prefix, so `GET /api/ai/documents` shows where they came from.
NAME_PREFIX = "aion-demo/"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="ingest the shipped sample documents and ask a question about them",
                       description=__doc__)
    p.add_argument("--question", default=DEFAULT_QUESTION, help=f"what to ask (default: {DEFAULT_QUESTION!r})")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one request (default 300)")
    p.set_defaults(func=run)


def sample_documents() -> list[tuple[str, bytes]]:
    """(upload name, content) of every shipped sample, in a stable order."""
    folder = resources.files("aion") / "demo_docs"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".md")), key=lambda f: f.name)
    return [(NAME_PREFIX + f.name, f.read_bytes()) for f in files]


def run(args: argparse.Namespace) -> int:
    return run_demo(args.url, args.question, args.timeout, sys.stdout)


def run_demo(url: str | None, question: str, timeout: float, out: TextIO) -> int:
    """Ingest, ask, print; 0 when the answer came back with sources. Messages go to `out`."""
    import httpx

    from ._http import error_message, gateway_client

    with gateway_client(url, timeout) as client:
        try:
            docs = sample_documents()
            r = client.post("/api/ai/documents",
                            files=[("files", (name, data, "text/markdown")) for name, data in docs])
            if r.status_code not in (200, 201, 207):
                out.write(f"aion demo: the gateway refused the sample documents: {error_message(r)}"
                          f"{_auth_hint(r)}\n")
                return 1
            results = r.json()["results"]
            for item in results:
                out.write(f"{item['status']:<9} {item['filename']}"
                          f"{' (' + item['reason'] + ')' if item.get('reason') else ''}\n")
            if any(item["status"] not in ("created", "replaced", "duplicate") for item in results):
                out.write("aion demo: some sample documents were not ingested (reasons above)\n")
                return 1

            out.write(f"\nQ: {question}\n")
            r = client.post("/api/ai/chat", json={"message": question, "store": False})
            if r.status_code != 200:
                out.write(f"aion demo: the question failed: {error_message(r)}{_auth_hint(r)}\n")
                return 1
            answer = r.json()
        except httpx.ConnectError as exc:
            out.write(f"aion demo: the gateway at {client.base_url} is not reachable ({type(exc).__name__}); "
                      "start the stack with `aion up` or point --url / AION_GATEWAY_URL at it\n")
            return 2
        except httpx.HTTPError as exc:
            out.write(f"aion demo: the gateway at {client.base_url} did not answer: {type(exc).__name__}: {exc}\n")
            return 1
    return _print_answer(answer, out)


def _print_answer(answer: dict, out: TextIO) -> int:
    out.write("A: " + textwrap.indent(answer["text"].strip(), "   ").lstrip() + "\n\n")
    from ._answer import describe, source_lines, warning_text

    out.write(f"({describe(answer)})\n")
    for warning in answer.get("warnings") or []:
        out.write(f"warning: {warning_text(warning)}\n")
    sources = answer.get("sources") or []
    if not sources:
        out.write("aion demo: the answer cites no sources; was the knowledge base emptied meanwhile?\n")
        return 1
    out.write("Sources:\n")
    for line in source_lines(sources):
        out.write(f"  {line}\n")
    # The passage the answer should rest on, so the grounding is visible whatever the model wrote
    # (the packaged 135M model is small; AION_BASE_MODEL takes a bigger one).
    best = " ".join(sources[0]["text"].split())
    out.write(f"\n[{sources[0]['n']}] says: {textwrap.shorten(best, 400, placeholder=' ...')}\n")
    out.write("\nAsk your own: aion ask \"...\" (or talk: aion chat); add your files: aion ingest PATH\n")
    return 0


def _auth_hint(response) -> str:
    if response.status_code in (401, 403):
        return " (the aion commands send the key given as AION_API_KEY)"
    return ""
