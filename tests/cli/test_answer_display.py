"""How the CLI shows an answer: each source once and by score, warnings in English, the JSON for scripts."""

from __future__ import annotations

import json

from aion.commands._answer import (
    script_answer,
    source_label,
    source_lines,
    sse_events,
    warning_text,
)


def source(n: int, title: str, heading: str | None, score: float, document: str = "d1") -> dict:
    return {"n": n, "title": title, "page_or_heading": heading, "score": score, "document": document,
            "chunk": str(n), "text": f"passage {n}", "url": None}


def test_a_heading_path_that_starts_with_the_title_does_not_repeat_it() -> None:
    title = "Brightwell Orchards Robotics — company overview"
    assert source_label(title, title) == title
    assert source_label("Warranty and support", "Warranty and support > Warranty") == "Warranty and support — Warranty"
    assert source_label("warranty AND support ", "Warranty and support > Support > Phone") == \
        "warranty AND support — Support > Phone"
    assert source_label("kettle.pdf", "p. 2") == "kettle.pdf — p. 2"
    assert source_label("notes.txt", None) == "notes.txt"
    assert source_label("Pricing", "Plans") == "Pricing — Plans"


def test_sources_are_listed_once_each_highest_score_first() -> None:
    sources = [source(1, "Pricing and plans", "Pricing and plans", 0.41, "p"),
               source(2, "Warranty and support", "Warranty and support > Warranty", 0.73, "w"),
               source(3, "Warranty and support", "Warranty and support > Warranty", 0.52, "w"),
               source(4, "Warranty and support", "Warranty and support > Support", 0.60, "w")]
    assert source_lines(sources) == [
        "[2][3] Warranty and support — Warranty  (0.730)",
        "[4] Warranty and support — Support  (0.600)",
        "[1] Pricing and plans  (0.410)",
    ]


def test_warnings_are_english_sentences_never_bare_codes() -> None:
    low = warning_text({"reason": "low_confidence", "C": 0.412, "tau": 0.62})
    assert low.startswith("the documents match this question only weakly (retrieval match 0.41, below the "
                          "threshold 0.62)")
    assert warning_text("low_confidence") == "the documents match this question only weakly"
    assert warning_text({"reason": "history_trimmed", "message": "the 2 oldest turns were left out"}) == \
        "the 2 oldest turns were left out"
    assert warning_text("something_new") == "something new"
    for text in (low, warning_text("budget_exhausted"), warning_text("embeddings_unavailable")):
        assert "_" not in text and "aviso" not in text


def test_the_json_for_scripts_names_each_field_and_sorts_sources_by_score() -> None:
    answer = {"text": "Three years [2].", "used": "local", "answer": "generated", "C": 0.7, "support": 0.9,
              "model": "smollm2", "conversation_id": "c1", "request_id": "r1", "warnings": ["low_confidence"],
              "usage": {"prompt_tokens": 10, "completion_tokens": 4}, "latency_ms": 12, "cached": False,
              "sources": [source(1, "A", None, 0.2), source(2, "Warranty and support",
                                                             "Warranty and support > Warranty", 0.8)]}
    out = json.loads(json.dumps(script_answer(answer)))
    assert out["answer"] == "Three years [2]." and out["used"] == "local" and out["kind"] == "generated"
    assert out["confidence"] == 0.7 and out["support"] == 0.9
    assert out["conversation_id"] == "c1" and out["request_id"] == "r1"
    assert [(s["n"], s["score"], s["label"]) for s in out["sources"]] == [
        (2, 0.8, "Warranty and support — Warranty"), (1, 0.2, "A")]
    assert out["warnings"] == [{"reason": "low_confidence",
                                "message": "the documents match this question only weakly"}]


def test_sse_frames_are_parsed_with_their_event_names() -> None:
    lines = ["event: sources", 'data: {"sources": [], "C": 0.5}', "", 'data: {"x": 1}', "",
             "event: token", 'data: {"text": "Hi"}', "", ": ping", "event: done", 'data: {"request_id": "r"}']
    assert list(sse_events(lines)) == [("sources", {"sources": [], "C": 0.5}), ("message", {"x": 1}),
                                       ("token", {"text": "Hi"}), ("done", {"request_id": "r"})]
