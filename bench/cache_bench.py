"""Response cache: latency of a hit beside a miss, and what a repeated paid question costs.

One request at a time through a whole stack (bench/gateway_stack.py: its own Postgres, the real
inference service on SmolLM2-135M + MiniLM, `aion gateway` as a process, the test corpus ingested):

  - miss: a question asked for the first time, answered locally by the real model (64 tokens, greedy);
  - L1 hit: the same question again on the same gateway (the answer is in its memory);
  - L2 hit: the same question on a second gateway process on the same database (Postgres only).
  - spend: every question asked again with forceFallback, answered by the OpenAI stand-in priced as an
    unknown model (the expensive default), twice; the ledger's charges and the budget's spend after
    each round.

    python -m bench.cache_bench --questions 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from bench.kb_common import RESULTS, CpuMeter, machine, percentile, say
from bench.load_bench import QUESTIONS


def ask(client: httpx.Client, question: str, **body) -> tuple[float, dict]:
    started = time.perf_counter()
    r = client.post("/api/ai/chat", json={"message": question, "tau": 0, **body})
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    return elapsed, r.json()


def summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(percentile(ms, 95), 1),
            "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="inference threads (AION_THREADS)")
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from bench.gateway_stack import gateway_stack
    from tests.fixtures.openai_standin import run_standin

    questions = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})")
                 for i in range(args.questions)]
    result: dict = {"machine": machine(), "inference_threads": args.threads, "questions": len(questions)}
    with run_standin() as standin:
        env = {"AION_LOCAL_MAX_TOKENS": "64", "AION_LOCAL_TEMPERATURE": "0", "AION_SUPPORT_THRESHOLD": "0",
               "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok", "OPENAI_API_KEY": "bench",
               "AION_FALLBACK_SHARE_MIN_ANSWERS": "100000", "AION_BUDGET_USD": "100"}
        with gateway_stack(threads=args.threads, gateway_env=env) as stack, \
                httpx.Client(base_url=stack.gateway_url, timeout=300) as gw:
            say(f"stack up: gateway {stack.gateway_url}; {len(questions)} questions")
            ask(gw, "Warm-up: what is this corpus about?", forceFallback=False)
            miss, l1, l2 = [], [], []
            with CpuMeter(ours=set(stack.pids)) as meter:
                for q in questions:
                    seconds, out = ask(gw, q)
                    assert not out["cached"], out
                    miss.append(seconds)
                    seconds, out = ask(gw, q)
                    assert out["cached"] and out["cache"] == "l1", out
                    l1.append(seconds)
                with stack.another_gateway() as url, httpx.Client(base_url=url, timeout=300) as other:
                    for q in questions:
                        seconds, out = ask(other, q)
                        assert out["cached"] and out["cache"] == "l2", out
                        l2.append(seconds)
                spend = []
                for round_ in (1, 2):
                    cached = sum(ask(gw, q, forceFallback=True)[1]["cached"] for q in questions)
                    budget = gw.get("/api/ai/budget").json()
                    spend.append({"round": round_, "answers_from_cache": cached, "fallback_calls": budget["fallback_calls"],
                                  "spent_usd": budget["spent_usd"]})
            stats = gw.get("/api/ai/cache").json()
    result.update({"miss": summary(miss), "l1_hit": summary(l1), "l2_hit": summary(l2),
                   "speedup_p50": round(statistics.median(miss) / statistics.median(l1), 1),
                   "repeated_fallback": spend, "cache_stats": {k: stats[k] for k in ("hits", "answers", "hit_rate",
                                                                                     "saved_usd", "paid_hits")},
                   "other_processes_cores": meter.others_cores()})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache_bench.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
