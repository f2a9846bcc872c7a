"""`aion eval` against a real gateway (real uvicorn, real MiniLM and SmolLM2, real Postgres): it prints
the figures, stores the run, and refuses a malformed question set naming the line."""

from __future__ import annotations

import json

import httpx
import psycopg

from aion.cli import main
from services.gateway.main import create_app
from tests.fixtures.servers import run_asgi

from .conftest import gateway_settings, kb_files

QUESTIONS = [
    {"id": "keeper", "kind": "keyword", "question": "Who was the last keeper of the Gull Island lighthouse?",
     "expect_document": "lighthouse.md", "expect_passage": "Agnes Morrow", "answer_contains": ["Agnes Morrow"]},
    {"id": "tyres", "kind": "semantic", "question": "What pressure should touring tyres be inflated to?",
     "expect_document": "bicycle.md", "expect_passage": "4.5 bar", "answer_contains": ["4.5"]},
    {"id": "none", "question": "What is the default port of a Redis server?", "unanswerable": True},
]


def _write(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_aion_eval_prints_the_figures_and_stores_the_run(clean_db, inference_url, tmp_path, capsys, monkeypatch):
    settings = gateway_settings(clean_db, inference_url, AION_LOCAL_MAX_TOKENS=24, AION_LOCAL_TEMPERATURE=0,
                                AION_RATE_API_PER_MIN=0, AION_RATE_CHAT_PER_MIN=0, AION_RATE_IP_PER_MIN=0)
    monkeypatch.setenv("AION_API_KEY", "")
    with run_asgi(create_app(settings)) as url:
        assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=120).status_code == 201
        retrieval_set = _write(tmp_path / "retrieval.jsonl", [json.dumps(q) for q in QUESTIONS])
        assert main(["eval", str(retrieval_set), "--retrieval-only", "--url", url]) == 0
        table = capsys.readouterr().out
        assert "retrieval hit@1   " in table and "100.0%" in table and "answer containment" not in table

        answer_set = _write(tmp_path / "answers.jsonl", [json.dumps(QUESTIONS[0]), json.dumps(QUESTIONS[2])])
        assert main(["eval", str(answer_set), "--json", "--tau", "0", "--url", url]) == 0
        run = json.loads(capsys.readouterr().out)
        runs = httpx.get(f"{url}/api/ai/eval/runs", timeout=30).json()["runs"]
    answers = run["metrics"]["answers"]
    assert run["mode"] == "answer" and answers["answered"] == 2 and answers["errors"] == 0
    assert run["metrics"]["retrieval"]["hit@1"] == 1.0
    assert answers["containment"]["of"] == 1 and answers["not_found_correct"]["of"] == 1
    assert answers["fallback_rate"]["rate"] == 0.0 and answers["cost_usd"] == 0.0
    # "documents": the answer path quoted the passages instead of an unsupported local answer (no fallback here).
    assert all(r["used"] in ("local", "documents") and r["answer"] for r in run["results"])
    # ... and then the run keeps the local model's own answer, judged apart (at tau 0 it answered them all).
    assert all((r["used"] == "documents") == bool(r["local_answer"]) for r in run["results"])
    assert answers["local_containment"]["of"] == 1 and run["settings"]["tau"] == 0.0
    assert [(r["label"], r["mode"], r["questions"]) for r in runs] == [("answers.jsonl", "answer", 2),
                                                                        ("retrieval.jsonl", "retrieval", 3)]
    with psycopg.connect(clean_db) as conn:
        stored = conn.execute("SELECT results, settings FROM eval_runs WHERE mode = 'answer'").fetchone()
    assert [r["id"] for r in stored[0]] == ["keeper", "none"] and stored[1]["arms"]["text"] == 1.0


def test_a_malformed_line_exits_non_zero_naming_it(tmp_path, capsys):
    bad_json = _write(tmp_path / "bad.jsonl", [json.dumps(QUESTIONS[0]), "", '{"question": "unterminated'])
    assert main(["eval", str(bad_json), "--url", "http://127.0.0.1:9"]) == 2
    assert "line 3: not valid JSON" in capsys.readouterr().err

    nothing_to_check = _write(tmp_path / "empty-check.jsonl", [json.dumps({"question": "Who?"})])
    assert main(["eval", str(nothing_to_check), "--url", "http://127.0.0.1:9"]) == 2
    assert "line 1: give expect_document, answer_contains or unanswerable" in capsys.readouterr().err

    unknown_field = _write(tmp_path / "typo.jsonl", [json.dumps(QUESTIONS[1]), json.dumps({**QUESTIONS[1],
                                                                                           "expect_doc": "x"})])
    assert main(["eval", str(unknown_field), "--url", "http://127.0.0.1:9"]) == 2
    assert "line 2: expect_doc: Extra inputs are not permitted" in capsys.readouterr().err
