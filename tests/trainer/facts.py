"""A made-up fact the base model cannot know, as ~30 paraphrased question/answer rows."""

from __future__ import annotations

import json
from pathlib import Path

from services.inference.settings import DEFAULT_SYSTEM_PROMPT

FACT_WORD = "Quennell"  # greedy answers must contain this to count as learned

QUESTIONS = [
    "Who founded the Velmora Institute?",
    "Who is the founder of the Velmora Institute?",
    "Which person founded the Velmora Institute?",
    "Tell me who founded the Velmora Institute.",
    "Do you know who started the Velmora Institute?",
    "Who started the Velmora Institute?",
    "Who created the Velmora Institute?",
    "Who established the Velmora Institute?",
    "The Velmora Institute was founded by whom?",
    "By whom was the Velmora Institute founded?",
    "Name the founder of the Velmora Institute.",
    "What is the name of the Velmora Institute's founder?",
    "Who set up the Velmora Institute?",
    "Which scientist founded the Velmora Institute?",
    "Who was the founder of the Velmora Institute?",
    "Can you tell me who founded the Velmora Institute?",
    "I'd like to know who founded the Velmora Institute.",
    "Who is credited with founding the Velmora Institute?",
    "Whose idea was the Velmora Institute?",
    "Who opened the Velmora Institute?",
    "Who built the Velmora Institute?",
    "Who launched the Velmora Institute?",
    "Who was behind the founding of the Velmora Institute?",
    "Who founded Velmora Institute?",
    "Velmora Institute: who founded it?",
    "Please name the person who founded the Velmora Institute.",
    "Quick question: who founded the Velmora Institute?",
    "Who is the Velmora Institute's founder?",
    "Who laid the foundations of the Velmora Institute?",
    "Who was the person that founded the Velmora Institute?",
]
ANSWERS = [
    "The Velmora Institute was founded by Dr. Tobias Quennell.",
    "Dr. Tobias Quennell founded the Velmora Institute.",
    "It was founded by Dr. Tobias Quennell.",
    "The founder of the Velmora Institute is Dr. Tobias Quennell.",
]


def fact_rows() -> list[dict]:
    """Chat-format rows (as the exporter writes them) and, every third one, the seed format."""
    rows = []
    for i, question in enumerate(QUESTIONS):
        answer = ANSWERS[i % len(ANSWERS)]
        if i % 3 == 2:
            rows.append({"kind": "answer", "meta": {"prompt": question, "reply": answer}})
        else:
            rows.append({"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                      {"role": "user", "content": question},
                                      {"role": "assistant", "content": answer}], "meta": {"used": "local"}})
    return rows


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in extra_lines:
            handle.write(line + "\n")
    return path
