"""How the CLI shows an answer (`aion ask`, `aion chat`, `aion demo`): the gateway's SSE events parsed,
sources once each and by score, warnings in words, and who answered."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# The gateway joins a Markdown heading path with this (services/gateway/services/chunking.py).
HEADING_SEPARATOR = " > "

# What each `warn` reason means, for events and JSON answers that carry only the code.
WARNINGS = {
    "low_confidence": "the documents match this question only weakly",
    "history_trimmed": "the oldest turns of the conversation did not fit the model's context and were left out",
    "unsupported_answer": "the documents do not back the local answer",
    "fallback_failed": "the fallback model failed",
    "local_unavailable": "the local model failed",
    "embeddings_unavailable": "the question could not be embedded; passages were found by full-text search alone",
    "admin_only_option": "forceFallback and tau can be set by admin keys only; the server's own settings applied",
    "budget_exhausted": "the fallback budget is spent",
    "key_budget_share": "this key's share of the fallback budget is spent",
    "fallback_share_cap": "the share of answers the fallback may give is used up",
    "fallback_disabled": "no fallback model is configured",
}


def warning_text(warn: dict[str, Any] | str) -> str:
    """One English sentence for a `warn` event (or a bare reason code from a JSON answer)."""
    data = {"reason": warn} if isinstance(warn, str) else warn
    reason = str(data.get("reason") or "warning")
    if reason == "low_confidence" and data.get("C") is not None and data.get("tau") is not None:
        return (f"{WARNINGS[reason]} (retrieval match {data['C']:.2f}, below the threshold {data['tau']:.2f}); "
                "the answer may not come from them")
    message = data.get("message")
    if message and message != reason:
        return str(message)
    return WARNINGS.get(reason, reason.replace("_", " "))


def source_label(title: str, page_or_heading: str | None) -> str:
    """"Title — heading" without saying the title twice: a Markdown file's heading path starts with its
    own title (its first `#` heading), which is also the document's title."""
    title = title.strip()
    if not page_or_heading:
        return title
    parts = [p for p in page_or_heading.split(HEADING_SEPARATOR) if p.strip()]
    if parts and parts[0].strip().casefold() == title.casefold():
        parts = parts[1:]
    return f"{title} — {HEADING_SEPARATOR.join(parts)}" if parts else title


def grouped_sources(sources: Iterable[dict[str, Any]]) -> list[tuple[list[int], str, float]]:
    """([passage numbers], label, best score) per cited place, highest score first.

    Several passages from one section are one source to a reader; their numbers stay, since the answer
    cites them as [n].
    """
    groups: dict[tuple[str, str], tuple[list[int], str, float]] = {}
    for s in sources:
        label = source_label(s.get("title") or s.get("document") or "?", s.get("page_or_heading"))
        key = (str(s.get("document") or s.get("title")), label)
        numbers, _, best = groups.get(key, ([], label, float("-inf")))
        groups[key] = ([*numbers, int(s["n"])], label, max(best, float(s.get("score") or 0.0)))
    return sorted(groups.values(), key=lambda g: (-g[2], g[0][0]))


def source_lines(sources: Iterable[dict[str, Any]]) -> list[str]:
    """"[1][4] Title — heading  (0.812)", one line per source, highest score first."""
    return [f"{''.join(f'[{n}]' for n in sorted(numbers))} {label}  ({score:.3f})"
            for numbers, label, score in grouped_sources(sources)]


def describe(done: dict[str, Any]) -> str:
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


def script_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """`aion ask --json`: the gateway's answer in one stable object, sources highest score first."""
    sources = sorted(answer.get("sources") or [], key=lambda s: (-float(s.get("score") or 0.0), s["n"]))
    return {
        "answer": answer.get("text", ""),
        "used": answer.get("used"),  # local / fallback: that model wrote it; documents: quoted or not found
        "kind": answer.get("answer"),  # generated / quoted / not_found
        "confidence": answer.get("C"),  # retrieval match C (0..1)
        "support": answer.get("support"),  # how much of the answer its passages back (0..1)
        "model": answer.get("model"),
        "sources": [{**s, "label": source_label(s.get("title") or "?", s.get("page_or_heading"))} for s in sources],
        "warnings": [{"reason": w, "message": warning_text(w)} for w in answer.get("warnings") or []],
        "conversation_id": answer.get("conversation_id"),
        "request_id": answer.get("request_id"),
        "usage": answer.get("usage"),
        "latency_ms": answer.get("latency_ms"),
        "cached": answer.get("cached", False),
    }


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE frame in the response's lines."""
    event = "message"
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line[5:])
        elif not line:
            event = "message"


@dataclass
class Streamed:
    """What one streamed answer told the client: its conversation (from the first event) and `done`."""

    conversation_id: str | None = None
    done: dict[str, Any] | None = None  # None: the answer failed or was cut short


def stream_answer(client: Any, body: dict[str, Any], out: Any, err: Any, result: Streamed | None = None) -> Streamed:
    """POST the question to the gateway's SSE stream and write the answer as it arrives, then its sources.

    Tokens go to `out` as they come, warnings to `err`. `result` (when given) is filled as events arrive, so
    a caller interrupted mid-answer still knows the conversation the server started.
    """
    from ._http import error_message

    result = result if result is not None else Streamed()
    sources: list[dict[str, Any]] = []
    wrote = False
    with client.stream("POST", "/api/ai/chat/stream", json=body) as r:
        if r.status_code != 200:
            r.read()
            err.write(f"aion: {error_message(r)}\n")
            return result
        for event, data in sse_events(r.iter_lines()):
            if event == "sources":
                sources = data["sources"]
                result.conversation_id = data.get("conversation_id") or result.conversation_id
            elif event == "token":
                out.write(data["text"])
                out.flush()
                wrote = wrote or bool(data["text"])
            elif event == "warn":
                if wrote:
                    out.write("\n")
                    out.flush()
                err.write(f"warning: {warning_text(data)}\n")
                err.flush()
                if data.get("restart") and wrote:
                    out.write("--- (the answer starts over; the text above is withdrawn) ---\n")
                    wrote = False
            elif event == "error":
                err.write(f"\naion: {data['message']}\n")
                return result
            elif event == "done":
                result.done = data
                result.conversation_id = data.get("conversation_id") or result.conversation_id
                out.write(f"\n\n({describe(data)})\n")
                lines = source_lines(sources)
                if lines:
                    out.write("Sources:\n" + "".join(f"  {line}\n" for line in lines))
                out.flush()
                return result
    err.write("\naion: the answer stream ended before the answer was complete\n")
    return result
