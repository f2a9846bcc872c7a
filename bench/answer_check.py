"""Answer quality on the demo documents, through a running gateway's real answer path.

For every question of a JSONL set (`question`, and `expect`: strings one of which a right answer
contains, or `uncovered: true` for a question the documents do not answer) it asks `/api/ai/chat`
and reports: the share of covered questions whose answer contains an expected string (generated or
quoted), the share whose answer echoes the prompt's instructions, and the share of uncovered
questions answered "not found". `--support-study` instead generates local answers itself (the
service's own prompt, straight to the inference service) and compares how well the lexical support
measure and MiniLM sentence similarity separate right answers from wrong ones (ROC AUC).

    python -m bench.answer_check --gateway http://127.0.0.1:3000 [--out results.json]
    python -m bench.answer_check --gateway URL --inference URL --support-study
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

QUESTIONS = Path(__file__).resolve().parent / "answer_check" / "demo_questions.jsonl"
# Instruction wording of today's and earlier prompts: an answer that repeats 5 words in a row of any
# of them, or a section marker, echoes the prompt.
EARLIER_INSTRUCTIONS = [
    "Você é a AION, assistente que responde a partir dos documentos do proprietário. Responda em PT-BR, de forma "
    "objetiva.",
    "Instruções: 1) Use APENAS as informações do CONTEXTO abaixo; não invente nada. Se a resposta não estiver no "
    "contexto, diga que não encontrou nos documentos. 2) Cite as passagens usadas pelo número, como [1], [2]. "
    "3) No final, escreva \"Fontes:\" seguido das fontes citadas.",
]
_MARKERS = re.compile(r"^\s*(?:Pergunta|CONTEXTO|Instruções|Question|Documents|Fontes)\s*:", re.IGNORECASE | re.M)


def load(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
        if not row.get("question") or not (row.get("expect") or row.get("uncovered")):
            raise SystemExit(f"{path}:{number}: needs `question` and `expect` (or `uncovered: true`)")
        rows.append(row)
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def echoes(answer: str, instructions: list[str]) -> bool:
    words = _words(answer)
    grams = {tuple(w[i:i + 5]) for w in map(_words, instructions) for i in range(len(w) - 4)}
    return bool(_MARKERS.search(answer)) or any(tuple(words[i:i + 5]) in grams for i in range(len(words) - 4))


def contains(answer: str, expected: list[str]) -> bool:
    low = answer.lower()
    return any(e.lower() in low for e in expected)


def run_answers(gateway: str, questions: list[dict]) -> dict:
    from services.gateway.services.not_found import is_not_found
    from services.gateway.services.prompt import instruction_texts

    instructions = instruction_texts() + EARLIER_INSTRUCTIONS
    rows = []
    with httpx.Client(base_url=gateway, timeout=600) as client:
        for i, q in enumerate(questions, start=1):
            started = time.perf_counter()
            r = client.post("/api/ai/chat", json={"message": q["question"], "store": False})
            r.raise_for_status()
            out = r.json()
            text = out["text"]
            row = {"question": q["question"], "text": text, "used": out.get("used"), "answer": out.get("answer"),
                   "C": out.get("C"), "support": out.get("support"), "seconds": round(time.perf_counter() - started, 2),
                   "echo": echoes(text, instructions)}
            if q.get("uncovered"):
                row["not_found"] = out.get("answer") == "not_found" or is_not_found(text)
            else:
                row["contains"] = contains(text, q["expect"])
            rows.append(row)
            sys.stderr.write(f"\r{i}/{len(questions)}")
    sys.stderr.write("\n")
    covered = [r for r in rows if "contains" in r]
    uncovered = [r for r in rows if "not_found" in r]
    kinds: dict[str, int] = {}
    for r in covered:
        kinds[str(r["answer"])] = kinds.get(str(r["answer"]), 0) + 1
    return {
        "covered": len(covered), "uncovered": len(uncovered),
        "contains": sum(r["contains"] for r in covered),
        "contains_generated": sum(r["contains"] for r in covered if r["answer"] in (None, "generated")),
        "echo": sum(r["echo"] for r in rows),
        "not_found": sum(r["not_found"] for r in uncovered),
        "covered_by_kind": kinds,
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "rows": rows,
    }


def auc(positive: list[float], negative: list[float]) -> float:
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(pairs) / len(pairs) if pairs else float("nan")


def support_study(gateway: str, inference: str, questions: list[dict], max_tokens: int) -> dict:
    """Generate local answers with the service's prompt; score them both ways against right/wrong."""
    from services.gateway.services.context_fit import ChatTokens, PromptBudget, fit_passages
    from services.gateway.services.language import detect_language
    from services.gateway.services.prompt import (
        DEFAULT_RAG_SYSTEM_PROMPT,
        DEFAULT_RAG_SYSTEM_PROMPT_EN,
        PromptPassage,
        build_rag_messages,
    )
    from services.gateway.services.support import Evidence, measure_support, split_sentences
    from services.gateway.services.tokens import load_token_counter

    tokens = ChatTokens(load_token_counter("auto"))
    budget = PromptBudget.for_window(8192, answer_tokens=512, passage_tokens=600, max_passages=3)
    personas = {"pt": DEFAULT_RAG_SYSTEM_PROMPT, "en": DEFAULT_RAG_SYSTEM_PROMPT_EN}
    rows = []
    with httpx.Client(timeout=600) as client:
        def embed(texts: list[str]) -> np.ndarray:
            r = client.post(f"{inference}/v1/embeddings", json={"input": texts})
            r.raise_for_status()
            return np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])

        for q in (q for q in questions if not q.get("uncovered")):
            found = client.post(f"{gateway}/api/ai/search", json={"q": q["question"]}).json()["passages"]
            texts = fit_passages([p["text"] for p in found], budget, tokens)
            passages = [PromptPassage(i + 1, t, "") for i, t in enumerate(texts)]
            language = detect_language(q["question"]) or "pt"
            messages = build_rag_messages(q["question"], passages, language=language, persona=personas[language])
            r = client.post(f"{inference}/v1/chat/completions", json={
                "model": "default", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                "frequency_penalty": 0.5})
            answer = r.json()["choices"][0]["message"]["content"]
            lexical = measure_support(answer, [Evidence(p.n, p.text) for p in passages], q["question"]).score
            said = split_sentences(answer)
            heard = [s for p in passages for s in split_sentences(p.text)]
            if said and heard:
                a, b = embed(said), embed(heard)
                weights = np.array([len(s) for s in said], dtype=float)
                minilm = float((a @ b.T).max(axis=1) @ weights / weights.sum())
            else:
                minilm = 0.0
            rows.append({"question": q["question"], "answer": answer, "right": contains(answer, q["expect"]),
                         "lexical": lexical, "minilm": round(minilm, 4)})
            sys.stderr.write(f"\r{len(rows)}")
    sys.stderr.write("\n")
    right = [r for r in rows if r["right"]]
    wrong = [r for r in rows if not r["right"]]
    return {"answers": len(rows), "right": len(right),
            "auc_lexical": round(auc([r["lexical"] for r in right], [r["lexical"] for r in wrong]), 3),
            "auc_minilm": round(auc([r["minilm"] for r in right], [r["minilm"] for r in wrong]), 3),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:3000")
    parser.add_argument("--inference", default="http://127.0.0.1:8008")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--support-study", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=128, help="local answer length in the support study")
    parser.add_argument("--out", type=Path, help="write every answer and the figures as JSON here")
    args = parser.parse_args(argv)
    questions = load(args.questions)
    if args.support_study:
        result = support_study(args.gateway, args.inference, questions, args.max_tokens)
    else:
        result = run_answers(args.gateway, questions)
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "rows"}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
