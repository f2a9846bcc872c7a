"""`aion eval QUESTIONS.jsonl` — run a question set through the gateway and print its figures.

Each line: {"question", "answer_contains": [...], "expect_document", "expect_passage", "unanswerable",
"kind", "id"} (services/gateway/services/eval_set.py). The gateway runs every question through its
answer path (or retrieval alone with --retrieval-only) and stores the run for the admin panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate answers and retrieval on a question set (through the gateway)")
    p.add_argument("questions", type=Path, help="a JSONL file, one question per line")
    p.add_argument("--retrieval-only", action="store_true", help="score retrieval alone (no answers generated)")
    p.add_argument("--vector-weight", type=float, help="with --retrieval-only: the ANN arm's weight (0: off)")
    p.add_argument("--text-weight", type=float, help="with --retrieval-only: the full-text arm's weight (0: off)")
    p.add_argument("--tau", type=float,
                   help="the confidence threshold for this run (default: the gateway's AION_TAU_CONFIDENCE)")
    p.add_argument("--label", help="the run's name in the admin panel (default: the file's name)")
    p.add_argument("--json", action="store_true", help="print the stored run as JSON instead of a table")
    p.add_argument("--url", help="gateway URL (env AION_GATEWAY_URL, default http://127.0.0.1:3000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.gateway.services.eval_set import EvalSetError, parse_lines

    try:
        text = args.questions.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"aion: cannot read {args.questions}: {exc}\n")
        return 2
    try:
        questions = parse_lines(text.splitlines())
    except EvalSetError as exc:
        sys.stderr.write(f"aion: {args.questions}: {exc}\n")
        return 2
    body: dict[str, Any] = {"questions": [q.model_dump(exclude_none=True) for q in questions],
                            "label": args.label or args.questions.name, "retrieval_only": args.retrieval_only,
                            "stream": True}
    for key, value in (("vector_weight", args.vector_weight), ("text_weight", args.text_weight), ("tau", args.tau)):
        if value is not None:
            body[key] = value
    run_result = _stream(args.url, body, len(questions))
    if isinstance(run_result, int):
        return run_result
    out = json.dumps(run_result, ensure_ascii=False, indent=2) if args.json else format_table(run_result)
    sys.stdout.write(out + "\n")
    return 0


def _stream(url: str | None, body: dict[str, Any], total: int) -> dict[str, Any] | int:
    """The stored run, or an exit status after printing why there is none."""
    import httpx
    from tqdm import tqdm

    from ._http import error_message, gateway_client, unreachable

    with gateway_client(url, 600.0) as client:
        try:
            with client.stream("POST", "/api/ai/eval", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    sys.stderr.write(f"aion: {error_message(response)}\n")
                    return 1
                mode = "retrieval" if body["retrieval_only"] else "answers"
                with tqdm(total=total, desc=mode, unit="q", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
                    event = "message"
                    for line in response.iter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data = json.loads(line[5:])
                            if event == "result":
                                bar.update(1)
                            elif event == "done":
                                return data
                            elif event == "error":
                                sys.stderr.write(f"aion: {data['message']}\n")
                                return 1
        except httpx.ConnectError as exc:
            return unreachable(client, exc)
    sys.stderr.write("aion: the gateway closed the evaluation stream before its end; see its log\n")
    return 1


def _pct(share: Any) -> str:
    if share is None:
        return "—"
    if isinstance(share, dict):
        return f"{share['rate'] * 100:.1f}% (of {share['of']})"
    return f"{share * 100:.1f}%"


def format_table(run: dict[str, Any]) -> str:
    """The figures as a two-column table, retrieval first, then answers when the run generated them."""
    m = run["metrics"]
    r = m["retrieval"]
    arms = run["settings"].get("arms", {})
    rows = [("questions", str(m["questions"])),
            ("retrieval arms", f"vector {arms.get('vector')} / text {arms.get('text')}"),
            ("retrieval hit@1", _pct(r["hit@1"])), ("retrieval hit@5", _pct(r["hit@5"])),
            ("retrieval MRR", "—" if r["mrr"] is None else f"{r['mrr']:.3f}")]
    for kind, k in sorted(r.get("by_kind", {}).items()):
        rows.append((f"  {kind} hit@1 / hit@5", f"{_pct(k['hit@1'])} / {_pct(k['hit@5'])} (of {k['questions']})"))
    c = m["confidence"]
    rows.append(("mean C answerable / not", f"{c['answerable_mean']} / {c['unanswerable_mean']}"))
    if "answers" in m:
        a = m["answers"]
        rows += [("answer containment", _pct(a["containment"])), ("citation correct", _pct(a["citation_correct"])),
                 ("'not found' when uncovered", _pct(a["not_found_correct"])),
                 ("'not found' when covered", _pct(a["false_not_found"])),
                 ("fallback rate", _pct(a["fallback_rate"])),
                 ("local model's own containment", _pct(a.get("local_containment"))),
                 ("local answers replaced", str(a.get("replaced_local", 0))),
                 ("instruction echo", str(a["instruction_echo"])),
                 ("errors", str(a["errors"])), ("cost", f"${a['cost_usd']:.4f}")]
    rows += [("latency p50 / p95", f"{m['latency_ms']['p50']:.0f} / {m['latency_ms']['p95']:.0f} ms")]
    if m.get("degraded"):
        rows.append(("full text only (embeddings down)", str(m["degraded"])))
    width = max(len(k) for k, _ in rows)
    head = f"run {run['id']} · {run['label']} · {run['mode']} · model {run.get('model') or '—'}"
    return "\n".join([head] + [f"{k.ljust(width)}  {v}" for k, v in rows])
