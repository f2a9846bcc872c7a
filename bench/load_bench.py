"""Gateway under load: N concurrent chat streams for a fixed time on loopback, then stop by itself.

A whole stack (bench/gateway_stack.py: own Postgres, real inference on the default model, `aion
gateway` as its own process). Each of N clients loops over `GET /api/ai/chat/stream` until the
duration is up; a share of the questions ask for the fallback (forceFallback), served by the OpenAI
stand-in (tests/fixtures/openai_standin.py) under a deliberately small budget, so the budget guard
and the fallback path are both exercised. Reported: completed answers and throughput, p50/p95 time
to first token and total time, errors (must be 0), answers logged vs completed (must be equal),
fallback spend vs cap (must not exceed it), and the CPU other processes used meanwhile.

    python -m bench.load_bench --streams 8 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx
import psycopg

from bench.kb_common import RESULTS, CpuMeter, machine, percentile, say

QUESTIONS = [
    "At what temperature do the greenhouse roof vents open?",
    "How often is the sourdough starter fed?",
    "What tyre pressure do the touring bicycles use?",
    "When was the Gull Island lighthouse built?",
    "How is the greenhouse irrigated?",
    "How long does the sourdough bake with the lid off?",
    "What should be checked on the bicycle brakes?",
    "Can visitors climb the lighthouse tower?",
]


@dataclass
class Outcome:
    ok: bool
    used: str | None
    request_id: str | None
    ttft_s: float | None
    total_s: float
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


async def one_stream(client: httpx.AsyncClient, question: str, force_fallback: bool) -> Outcome:
    started = time.perf_counter()
    ttft: float | None = None
    name, done, error, warnings = "message", None, None, []
    params = {"q": question, "forceFallback": str(force_fallback).lower()}
    try:
        async with client.stream("GET", "/api/ai/chat/stream", params=params) as r:
            if r.status_code != 200:
                return Outcome(False, None, None, None, time.perf_counter() - started,
                               f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    if name == "token" and ttft is None:
                        ttft = time.perf_counter() - started
                    elif name == "warn":
                        warnings.append(data.get("reason", "?"))
                    elif name == "done":
                        done = data
                    elif name == "error":
                        error = data.get("message")
    except httpx.HTTPError as exc:
        return Outcome(False, None, None, ttft, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - started
    if done is None:
        return Outcome(False, None, None, ttft, total, error or "stream ended without `done`", warnings)
    return Outcome(True, done["used"], done["request_id"], ttft, total, None, warnings)


async def drive(url: str, streams: int, duration: float, fallback_share: float, seed: int) -> tuple[list[Outcome], float]:
    rng = random.Random(seed)
    deadline = time.monotonic() + duration
    outcomes: list[Outcome] = []

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300, connect=10)) as client:
            i = n
            while time.monotonic() < deadline:  # no new request after the deadline; in-flight ones finish
                outcomes.append(await one_stream(client, QUESTIONS[i % len(QUESTIONS)], rng.random() < fallback_share))
                i += streams

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(streams)))
    return outcomes, time.perf_counter() - started


def logged_answers(db: str, request_ids: list[str]) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM ai_events WHERE kind = 'answer' AND request_id = ANY(%s)",
                            (request_ids,)).fetchone()[0]


def ledger_spend(db: str) -> tuple[float, int]:
    with psycopg.connect(db) as conn:
        spent, calls = conn.execute("SELECT coalesce(sum(cost_usd), 0), count(*) FROM fallback_ledger "
                                    "WHERE status = 'settled'").fetchone()
    return float(spent), int(calls)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=8, help="concurrent chat streams")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds during which new requests start")
    parser.add_argument("--max-tokens", type=int, default=64, help="AION_LOCAL_MAX_TOKENS")
    parser.add_argument("--fallback-share", type=float, default=0.25, help="share of requests with forceFallback")
    parser.add_argument("--budget-usd", type=float, default=0.03,
                        help="fallback cap: small, so that it runs out during the run")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (AION_THREADS)")
    parser.add_argument("--seed", type=int, default=7)
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from bench.gateway_stack import gateway_stack
    from tests.fixtures.openai_standin import run_standin

    with run_standin() as standin:
        env = {"AION_LOCAL_MAX_TOKENS": str(args.max_tokens), "AION_LOCAL_TEMPERATURE": "0",
               "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok", "OPENAI_API_KEY": "bench",
               "AION_FALLBACK_MAX_TOKENS": str(args.max_tokens), "AION_BUDGET_USD": str(args.budget_usd),
               "AION_BUDGET_PERIOD": "day", "AION_TAU_FALLBACK": "1.0", "AION_TAU_CONFIDENCE": "0"}
        with gateway_stack(threads=args.threads, gateway_env=env) as stack:
            say(f"stack up: gateway {stack.gateway_url}, inference {stack.inference_url}; "
                f"{args.streams} streams for {args.duration:.0f} s")
            asyncio.run(drive(stack.gateway_url, 1, 0.1, 0.0, args.seed))  # warm-up: one answer
            with CpuMeter(ours=set(stack.pids)) as meter:
                outcomes, wall = asyncio.run(drive(stack.gateway_url, args.streams, args.duration,
                                                   args.fallback_share, args.seed))
            completed = [o for o in outcomes if o.ok]
            logged = logged_answers(stack.database_url, [o.request_id for o in completed if o.request_id])
            spent, fallback_calls = ledger_spend(stack.database_url)
            budget = httpx.get(f"{stack.gateway_url}/api/ai/budget", timeout=30).json()
            metrics_page = httpx.get(f"{stack.gateway_url}/metrics", timeout=30).text
            fallback_calls_seen = len(standin.calls)

    errors = [o for o in outcomes if not o.ok]
    ttft = [o.ttft_s for o in completed if o.ttft_s is not None]
    total = [o.total_s for o in completed]
    by_used: dict[str, int] = {}
    for o in completed:
        by_used[o.used or "none"] = by_used.get(o.used or "none", 0) + 1
    denied = sum("budget_exhausted" in o.warnings for o in outcomes)
    result = {
        "machine": machine(), "streams": args.streams, "duration_s": args.duration, "wall_s": round(wall, 1),
        "inference_threads": args.threads, "max_tokens": args.max_tokens, "fallback_share": args.fallback_share,
        "requests": len(outcomes), "completed": len(completed), "errors": len(errors),
        "error_samples": [o.error for o in errors[:5]],
        "answers_per_s": round(len(completed) / wall, 3),
        "ttft_s": {"p50": round(percentile(ttft, 50), 3), "p95": round(percentile(ttft, 95), 3)} if ttft else None,
        "total_s": {"p50": round(percentile(total, 50), 3), "p95": round(percentile(total, 95), 3)} if total else None,
        "used": by_used, "fallback_denied_budget": denied, "fallback_calls": fallback_calls,
        "fallback_calls_at_provider": fallback_calls_seen,
        "answers_logged": logged, "all_answers_logged": logged == len(completed),
        "spend_usd": round(spent, 6), "cap_usd": args.budget_usd, "spend_within_cap": spent <= args.budget_usd + 1e-9,
        "budget_endpoint": {k: budget.get(k) for k in ("spent_usd", "reserved_usd", "remaining_usd")},
        # /metrics' answer counter: the run's answers, failed ones and the warm-up's one included.
        "gateway_metrics_answers": sum(float(line.rsplit(" ", 1)[1]) for line in metrics_page.splitlines()
                                       if line.startswith("aion_gateway_answers_total{")),
        "other_processes_cores": meter.others_cores(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    ok = not errors and result["all_answers_logged"] and result["spend_within_cap"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
