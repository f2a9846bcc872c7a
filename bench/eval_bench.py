"""Retrieval (and answer) quality on the shipped evaluation set: vector-only vs hybrid vs text-only.

    .venv/bin/python -m bench.eval_bench [--answers] [--threads 2]

Starts the whole stack (bench/gateway_stack.py: embedded Postgres, the real inference service, `aion
gateway`), ingests bench/eval/corpus/ (18 package READMEs) and runs bench/eval/questions.jsonl
through POST /api/ai/eval — what `aion eval` does — retrieval-only with each arm alone and both;
with --answers also once through the whole answer path (packaged SmolLM2, no fallback). Every run is
stored in the stack's eval_runs as the admin panel would show it. Results: bench/results/eval.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx

from bench.kb_common import RESULTS, CpuMeter, machine, say

EVAL_DIR = Path(__file__).resolve().parent / "eval"
ARMS = {"vector only": (1.0, 0.0), "hybrid": (1.0, 1.0), "text only": (0.0, 1.0)}


def ingest_corpus(client: httpx.Client) -> int:
    for doc in client.get("/api/ai/documents", params={"limit": 200}).json()["items"]:  # the stack's test corpus
        client.delete(f"/api/ai/documents/{doc['id']}").raise_for_status()
    files = sorted((EVAL_DIR / "corpus").glob("*.md"))
    chunks = 0
    for i in range(0, len(files), 8):
        r = client.post("/api/ai/documents", files=[("files", (p.name, p.read_bytes(), "text/markdown"))
                                                    for p in files[i:i + 8]])
        r.raise_for_status()
        chunks += sum(x["chunk_count"] for x in r.json()["results"])
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--answers", action="store_true", help="also run the whole answer path once")
    parser.add_argument("--answers-only", action="store_true", help="the answer path only, no retrieval-only runs")
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from bench.gateway_stack import gateway_stack
    from services.gateway.services.eval_set import parse_lines

    questions = [q.model_dump(exclude_none=True)
                 for q in parse_lines((EVAL_DIR / "questions.jsonl").read_text().splitlines())]
    result: dict = {"machine": machine(), "questions": len(questions), "runs": {}}
    with gateway_stack(threads=args.threads, gateway_env={}) as stack, \
            httpx.Client(base_url=stack.gateway_url, timeout=3600) as client:
        result["chunks"] = ingest_corpus(client)
        say(f"corpus: {result['chunks']} chunks")
        for name, (vector, text) in ({} if args.answers_only else ARMS).items():
            with CpuMeter(ours=set(stack.pids)) as meter:
                r = client.post("/api/ai/eval", json={"questions": questions, "label": f"bench {name}",
                                                      "retrieval_only": True, "vector_weight": vector,
                                                      "text_weight": text})
            r.raise_for_status()
            run = r.json()
            result["runs"][name] = {"metrics": run["metrics"], "other_processes_cores": meter.others_cores(),
                                    "misses": [x["id"] for x in run["results"] if x["rank"] != 1 and
                                               not x["id"].startswith("none-")]}
            m = run["metrics"]["retrieval"]
            say(f"{name}: hit@1 {m['hit@1']} hit@5 {m['hit@5']} MRR {m['mrr']} "
                f"by kind {json.dumps(m['by_kind'])}; latency {run['metrics']['latency_ms']}")
        if args.answers or args.answers_only:
            with CpuMeter(ours=set(stack.pids)) as meter:
                r = client.post("/api/ai/eval", json={"questions": questions, "label": "bench answers"})
            r.raise_for_status()
            run = r.json()
            result["runs"]["answers"] = {"metrics": run["metrics"], "settings": run["settings"],
                                         "model": run["model"], "other_processes_cores": meter.others_cores(),
                                         "results": run["results"]}
            say(f"answers: {json.dumps(run['metrics'], indent=1)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("eval-answers.json" if args.answers_only else "eval.json")
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    say(f"written {out}")


if __name__ == "__main__":
    main()
