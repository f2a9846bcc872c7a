"""Gateway overhead: time to first token through the gateway minus straight to the inference service.

One request at a time (no queueing in either path), in pairs: the same question through the gateway's
`GET /api/ai/chat/stream`, and the exact messages the gateway built for it sent straight to the
inference service's `/v1/chat/completions` (rebuilt with the gateway's own prompt code from the
passages of the `sources` event). The order inside a pair alternates, so a drifting machine load
biases neither side. Per pair:

  - retrieval excluded: (first token − `sources` event) through the gateway − direct first token.
    What the gateway adds on the generation path: its OpenAI client, the SSE re-encoding, one more hop.
  - retrieval included: (first token − request sent) through the gateway − direct first token.
    The above plus embedding the question, the ANN query, MMR and the retrieval event's write.

Twice: with the real model behind the gateway (the difference sits inside the noise of a ~1000-token
prefill on a shared CPU), and with the OpenAI stand-in as the local model (first token in ~1 ms, so
what is left is the gateway's own cost, measured to the millisecond). Retrieval always uses the real
embedding model and Postgres.

    python -m bench.gateway_overhead_bench --pairs 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from bench.kb_common import RESULTS, CpuMeter, machine, percentile, say
from bench.load_bench import QUESTIONS


def gateway_ttft(client: httpx.Client, question: str) -> tuple[float, float, dict]:
    """(seconds to `sources`, seconds to the first token, the `sources` payload)."""
    started = time.perf_counter()
    at_sources, sources = None, None
    name = "message"
    with client.stream("GET", "/api/ai/chat/stream", params={"q": question, "tau": 0}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                if name == "sources":
                    at_sources, sources = time.perf_counter() - started, json.loads(line[5:])
                elif name == "token":
                    assert at_sources is not None and sources is not None
                    return at_sources, time.perf_counter() - started, sources
                elif name == "error":
                    raise RuntimeError(line)
    raise RuntimeError("the gateway stream ended before a token")


def direct_ttft(client: httpx.Client, body: dict) -> float:
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    return time.perf_counter() - started
    raise RuntimeError("the inference stream ended before a token")


def same_request(question: str, sources: dict, max_tokens: int, model: str | None = None) -> dict:
    """What the gateway sent to the inference service for this question (its own prompt code)."""
    from services.gateway.services.language import detect_language
    from services.gateway.services.prompt import PromptPassage, build_rag_messages, source_label
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings(_env_file=None)
    # The `sources` event lists the passages the prompt held (the prompt may hold the last one cut shorter).
    passages = [PromptPassage(n=s["n"], text=s["text"], source=source_label(s["title"], s["page_or_heading"]))
                for s in sources["sources"]]
    language = detect_language(question) or settings.default_language
    persona = settings.rag_system_prompt if language == "pt" else settings.rag_system_prompt_en
    messages = build_rag_messages(question, passages, language=language, persona=persona)
    body = {"model": model or settings.local_model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    if settings.local_frequency_penalty:
        body["frequency_penalty"] = settings.local_frequency_penalty
    return body


def summary(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
            "mean_ms": round(statistics.fmean(ms), 1)}


def measure(gateway_url: str, direct_url: str, *, pairs: int, warmup: int, max_tokens: int,
            model: str | None = None) -> list[dict]:
    """Alternating pairs (gateway, direct) per question; the direct side reuses the question's passages."""
    rows: list[dict] = []
    with httpx.Client(base_url=gateway_url, timeout=120) as gw, httpx.Client(base_url=direct_url, timeout=120) as inf:
        seen: dict[str, dict] = {}  # question -> its `sources` (retrieval is deterministic)
        for i in range(warmup + pairs):
            question = QUESTIONS[i % len(QUESTIONS)]
            if i % 2 == 1 and question in seen:
                direct = direct_ttft(inf, same_request(question, seen[question], max_tokens, model))
                to_sources, to_token, sources = gateway_ttft(gw, question)
            else:
                to_sources, to_token, sources = gateway_ttft(gw, question)
                direct = direct_ttft(inf, same_request(question, sources, max_tokens, model))
            seen[question] = sources
            if i >= warmup:
                rows.append({"direct": direct, "gateway": to_token, "retrieval": to_sources,
                             "excluded": (to_token - to_sources) - direct, "included": to_token - direct})
    return rows


def report(rows: list[dict]) -> dict:
    return {"pairs": len(rows), "direct_ttft": summary([r["direct"] for r in rows]),
            "gateway_ttft": summary([r["gateway"] for r in rows]),
            "gateway_to_sources": summary([r["retrieval"] for r in rows]),
            "overhead_retrieval_excluded": summary([r["excluded"] for r in rows]),
            "overhead_retrieval_included": summary([r["included"] for r in rows])}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=len(QUESTIONS), help="unreported pairs (one per question)")
    parser.add_argument("--max-tokens", type=int, default=4, help="tokens per answer: only the first one counts")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (AION_THREADS)")
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from bench.gateway_stack import gateway_stack
    from tests.fixtures.openai_standin import run_standin

    env = {"AION_LOCAL_MAX_TOKENS": str(args.max_tokens), "AION_LOCAL_TEMPERATURE": "0"}
    result: dict = {"machine": machine(), "inference_threads": args.threads}
    with run_standin() as standin, gateway_stack(threads=args.threads, gateway_env=env) as stack:
        say(f"stack up: gateway {stack.gateway_url}, inference {stack.inference_url}; {args.pairs} pairs each")
        with CpuMeter(ours=set(stack.pids)) as meter:
            result["real_model"] = report(measure(stack.gateway_url, stack.inference_url, pairs=args.pairs,
                                                  warmup=args.warmup, max_tokens=args.max_tokens))
        result["real_model"]["other_processes_cores"] = meter.others_cores()
        with stack.another_gateway(AION_LOCAL_CHAT_URL=standin.url, AION_LOCAL_MODEL="ok") as url, \
                CpuMeter(ours=set(stack.pids)) as meter:
            result["standin_model"] = report(measure(url, standin.url.removesuffix("/v1"), pairs=args.pairs,
                                                     warmup=args.warmup, max_tokens=args.max_tokens, model="ok"))
        result["standin_model"]["other_processes_cores"] = meter.others_cores()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway_overhead.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
