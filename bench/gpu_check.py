"""The GPU check: the owner's deployment path (a 7B model in nf4 on an NVIDIA GPU) exercised end to end.

Run on any NVIDIA machine with `scripts/gpu_check.sh` (`make gpu-check`); `--dry-run` runs the same code
on the CPU with a tiny model (tests/bench/test_gpu_check.py keeps it from rotting). Model weights cannot
travel to a bare machine, so it builds a model with Qwen2.5-7B-Instruct's exact configuration and random
weights (decode speed does not depend on their values) and a word-level tokenizer of the same size, then:

1. serves it with AION's inference service (its own loader, nf4), over HTTP: 1, 8 and 32 concurrent
   streams of distinct ~300-token prompts, 128 new tokens each — aggregate tokens/s, time to first token;
2. trains five QLoRA steps and runs one gate evaluation with the trainer's code;
3. reloads that adapter into the running service and serves it per request beside base-model requests;
4. merges it into the base (and reads /health);
5. serves the same model in bf16 at 1, 8 and 32 streams, and runs the 32-prompt burst through transformers'
   own continuous batching (`generate_batch`, paged KV cache) for comparison;

printing peak GPU memory and, beside single-stream decode, its physical bound: the weight bytes a token
reads over the memory bandwidth measured on the device. Writes everything as JSON to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.library_noise import silence_known_noise

REPO = Path(__file__).resolve().parents[1]

# Qwen/Qwen2.5-7B-Instruct's config.json (the compose gpu profile's model).
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                 vocab_size=152064, tie_word_embeddings=False, use_sliding_window=False, sliding_window=131072,
                 max_window_layers=28, bos_token_id=151643, eos_token_id=151645, hidden_act="silu")
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=1000000.0,
            vocab_size=1024, tie_word_embeddings=False, use_sliding_window=False, bos_token_id=1021,
            eos_token_id=1023, hidden_act="silu")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # the last three ids of the vocabulary
CHATML = ("{%- for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] + ' <|im_end|> ' }}"
          "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{%- endif %}")


@dataclass
class Plan:
    """Sizes of one run: the real check, or the CPU dry run."""

    config: dict[str, Any]
    device: str
    streams: tuple[int, ...]
    prompt_words: int
    new_tokens: int
    train_steps: int
    dtype: str  # the full-precision phase: bfloat16 on GPU, float32 on the CPU


REAL = Plan(QWEN25_7B, "cuda:0", (1, 8, 32), 300, 128, 5, "bfloat16")
DRY = Plan(TINY, "cpu", (1, 2, 4), 40, 8, 2, "float32")


def log(message: str) -> None:
    sys.stderr.write(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- the model ---------------------------------------------------------------------------------------
def build_model(folder: Path, plan: Plan) -> None:
    """Random weights (normal, std 0.02; norms 1) in the config's shape, saved with a word-level tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    started = time.perf_counter()
    config = Qwen2Config(**plan.config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in the dtype it is saved in: no fp32 copy on the way
    try:
        with torch.device("meta"):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=plan.device)
    generator = torch.Generator(device=plan.device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(folder, max_shard_size="4GB")
    del model
    save_tokenizer(folder, config.vocab_size)
    if plan.device.startswith("cuda"):
        torch.cuda.empty_cache()
    log(f"random {config.num_hidden_layers}-layer model saved in {time.perf_counter() - started:.1f} s")


def save_tokenizer(folder: Path, vocab_size: int) -> None:
    """Words w0, w1, ... as tokens, the three ChatML specials as the last ids, and a ChatML template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocab_size - len(SPECIALS)
    vocab = {f"w{i}": i for i in range(words - 1)}
    vocab["[UNK]"] = words - 1
    vocab.update({token: words + i for i, token in enumerate(SPECIALS)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=list(SPECIALS))
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)


def prompt_text(rng: random.Random, words: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(vocab_size - 8)}" for _ in range(words))


# -- the service -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def inference_service(model: Path, plan: Plan, four_bit: bool, work: Path) -> Iterator[str]:
    """AION's inference service on the model, in its own process, until the block ends."""
    port = free_port()
    env = {**os.environ, "AION_BASE_MODEL": str(model), "AION_EMBED_MODEL": "none", "AION_DEVICE": plan.device,
           "AION_LOAD_IN_4BIT": "true" if four_bit else "false", "AION_DTYPE": "auto" if four_bit else plan.dtype,
           "AION_MAX_BATCH_SIZE": str(max(plan.streams)), "AION_MAX_QUEUE": "256",
           "AION_MAX_NEW_TOKENS": str(plan.new_tokens), "AION_DATA_DIR": str(work / "data"),
           "AION_PREFIX_CACHE_MB": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)}
    env.pop("AION_INFERENCE_TOKEN", None)
    log_path = work / f"inference-{'nf4' if four_bit else 'full'}.log"
    code = ("import uvicorn; from services.inference.main import create_app; "
            f"uvicorn.run(create_app(), host='127.0.0.1', port={port}, log_level='warning')")
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the inference service exited:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/health", timeout=2).json()
                if health["status"] == "ready":
                    break
                if health["status"] == "error":
                    raise RuntimeError(f"the inference service failed to load: {health['error']}")
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"not ready after 600 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        log(f"service ready ({health['quantization']}, {health.get('runner')} runner) in "
            f"{time.perf_counter() - started:.1f} s")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def one_stream(client: httpx.AsyncClient, prompt: str, new_tokens: int, adapter: str | None) -> tuple[float, int]:
    """(seconds to the first token, tokens generated) of one /generate/stream request."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    body = {"prompt": prompt, "system": "w1 w2", "temperature": 0, "max_new_tokens": new_tokens,
            "adapter": adapter, "ignore_eos": True}  # random weights: a stream's length is the test's choice
    async with client.stream("POST", "/generate/stream", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream answered {response.status_code}: {(await response.aread())[:400]!r}")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token" and first is None:
                first = time.perf_counter() - started
            elif line.startswith("data:") and event == "done":
                tokens = json.loads(line[5:])["usage"]["completion_tokens"]
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"stream failed: {line[5:]}")
    return (first if first is not None else time.perf_counter() - started), tokens


def step_metrics(url: str) -> dict[str, float]:
    """The engine's step and prefill timers (sum and count of each histogram) from /metrics."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        for name in ("step_forward_seconds", "step_tokens_seconds", "prefill_seconds"):
            for part in ("sum", "count"):
                if line.startswith(f"aion_inference_{name}_{part} "):
                    out[f"{name}_{part}"] = float(line.split()[-1])
    return out


def _mean_ms(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    return round(1000 * (after[f"{name}_sum"] - before[f"{name}_sum"]) / count, 2) if count else None


async def burst(url: str, plan: Plan, streams: int, rng: random.Random, adapters: tuple[str | None, ...] = (None,),
                new_tokens: int | None = None) -> dict[str, Any]:
    """`streams` concurrent requests of distinct prompts: aggregate tokens/s, first-token times, and where a
    decode step's time went (the engine's own timers)."""
    new_tokens = new_tokens or plan.new_tokens
    prompts = [prompt_text(rng, plan.prompt_words, plan.config["vocab_size"]) for _ in range(streams)]
    before = await asyncio.to_thread(step_metrics, url)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[one_stream(client, p, new_tokens, adapters[i % len(adapters)])
                                         for i, p in enumerate(prompts)])
        wall = time.perf_counter() - started
    after = await asyncio.to_thread(step_metrics, url)
    firsts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"streams": streams, "tokens": tokens, "seconds": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 1), "ttft_p50_s": round(statistics.median(firsts), 3),
            "ttft_max_s": round(firsts[-1], 3),
            "decode_tokens_per_s_per_stream": round(new_tokens / max(wall - firsts[-1], 1e-6), 1)
            if streams == 1 else None,
            "step_forward_ms": _mean_ms(before, after, "step_forward_seconds"),
            "step_tokens_ms": _mean_ms(before, after, "step_tokens_seconds"),
            "prefill_ms": _mean_ms(before, after, "prefill_seconds")}


def streams_phase(url: str, plan: Plan, label: str, memory: MemorySampler) -> list[dict[str, Any]]:
    rng = random.Random(label)
    for n in plan.streams:  # warm-up: first-call allocations and kernel choices at every batch shape
        asyncio.run(burst(url, plan, n, rng, new_tokens=4))
    out = []
    for n in plan.streams:
        with memory.phase(f"{label} {n} streams"):
            result = asyncio.run(burst(url, plan, n, rng))
        result["peak_memory_mb"] = memory.peaks[f"{label} {n} streams"]
        log(f"{label} {n:>2} streams: {result['tokens_per_s']:8.1f} tok/s, first token p50 {result['ttft_p50_s']} s, "
            f"step {result['step_forward_ms']} + {result['step_tokens_ms']} ms, prefill {result['prefill_ms']} ms")
        out.append(result)
    return out


# -- training ---------------------------------------------------------------------------------------
def train_and_gate(model: Path, plan: Plan, work: Path) -> dict[str, Any]:
    """Five QLoRA steps and one gate evaluation with the trainer's code; returns figures and the adapter."""
    from trainer.base_model import load_base
    from trainer.data_builder import build_dataset
    from trainer.evaluate import RegressionItem, evaluate_candidate
    from trainer.model_size import count_parameters
    from trainer.run_lora import train_adapter
    from trainer.settings import TrainerSettings

    rng = random.Random(7)
    rows = work / "train.jsonl"
    vocab = plan.config["vocab_size"]
    with rows.open("w") as f:
        for _ in range(40):
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "w5 w6 w7"},
                {"role": "user", "content": prompt_text(rng, plan.prompt_words // 3, vocab)},
                {"role": "assistant", "content": prompt_text(rng, 24, vocab)}]}) + "\n")
    settings = TrainerSettings(**{
        "AION_DATA_DIR": str(work / "data"), "AION_LORA_BASE": str(model),
        "AION_TRAIN_DEVICE": "cuda" if plan.device.startswith("cuda") else "cpu",
        "AION_TRAIN_LOAD_IN_4BIT": "true", "AION_TRAIN_MAX_STEPS": plan.train_steps, "AION_TRAIN_BATCH_SIZE": 4,
        "AION_TRAIN_REPLAY_RATIO": 0, "AION_TRAIN_HELDOUT_FRACTION": 0.2, "AION_TRAIN_MIN_EXAMPLES": 1,
        "AION_TRAIN_REGRESSION_MAX_NEW_TOKENS": 8, "AION_TRAIN_LEARNING_RATE": 2e-4})
    started = time.perf_counter()
    base = load_base(settings)
    loaded_s = time.perf_counter() - started
    settings = settings.for_model(count_parameters(base.model))  # the size-dependent defaults, as the worker does
    dataset = build_dataset([rows], base.tokenizer, settings)
    adapter_dir = work / "adapters" / "gpu-check-v1"
    trained = train_adapter(base, dataset, adapter_dir, settings)
    regression = [RegressionItem(question=prompt_text(rng, 12, vocab), answers=("w3",)) for _ in range(2)]
    gate = evaluate_candidate(base, adapter_dir, dataset.heldout, settings, regression=regression)
    del base
    _empty_device_cache(plan)
    return {"adapter": str(adapter_dir), "load_s": round(loaded_s, 1), "steps": trained.steps,
            "seconds_per_step": round(trained.seconds / max(trained.steps, 1), 3),
            "losses": trained.losses, "quantization": trained.quantization,
            "gate": {"decision": gate.decision, "seconds": gate.seconds,
                     "heldout_loss_candidate": gate.heldout_loss_candidate}}


def adapter_phase(url: str, adapter: str, plan: Plan, memory: MemorySampler) -> dict[str, Any]:
    """Load the trained adapter without a restart, serve it per request beside the base, then merge it."""
    reload = httpx.post(f"{url}/adapter/reload", json={"path": adapter, "name": "gpu-check-v1", "activate": False},
                        timeout=600)
    reload.raise_for_status()
    rng = random.Random("adapter")
    with memory.phase("adapter"):
        alone = asyncio.run(burst(url, plan, 1, rng, adapters=("gpu-check-v1",)))
        mixed = asyncio.run(burst(url, plan, plan.streams[1], rng, adapters=("gpu-check-v1", None)))
    httpx.post(f"{url}/adapter/activate", json={"name": "gpu-check-v1"}, timeout=60).raise_for_status()
    started = time.perf_counter()
    with memory.phase("merge"):
        merge = httpx.post(f"{url}/adapter/merge", timeout=900)
    merge_s = time.perf_counter() - started
    health = httpx.get(f"{url}/health", timeout=10).json()
    base_name = health["base_model"]
    after: dict[str, Any] = {}
    refused = None
    if merge.status_code == 200:
        after = asyncio.run(burst(url, plan, 1, rng))
        refused = httpx.post(f"{url}/generate", json={"prompt": "w1", "adapter": base_name, "max_new_tokens": 2},
                             timeout=60).status_code
    result = {"reload_s": round(reload.elapsed.total_seconds(), 2), "adapter_1_stream": alone,
              "adapter_and_base_mixed": mixed, "merge_status": merge.status_code,
              "merge_body": merge.json(), "merge_s": round(merge_s, 1), "health_after_merge": {
                  k: health.get(k) for k in ("quantization", "merged", "adapter", "kv_cache", "runner")},
              "after_merge_1_stream": after, "base_after_merge_status": refused,
              "merge_peak_memory_mb": memory.peaks["merge"]}
    log(f"adapter: reload {result['reload_s']} s, 1 stream {alone['tokens_per_s']} tok/s "
        f"(step {alone['step_forward_ms']} + {alone['step_tokens_ms']} ms), "
        f"{plan.streams[1]} mixed {mixed['tokens_per_s']} tok/s; merge {merge.status_code} in {merge_s:.1f} s")
    return result


def transformers_batching(model: Path, plan: Plan, streams: int) -> dict[str, Any]:
    """The same burst through transformers' own continuous batching (`generate_batch`, paged KV cache),
    offline: what AION's engine on the transformers path is measured against."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from services.inference.loader import compute_dtype

    tokenizer = AutoTokenizer.from_pretrained(model)
    loaded = AutoModelForCausalLM.from_pretrained(model, dtype=compute_dtype(plan.device), device_map=plan.device)
    loaded.eval()
    rng = random.Random("transformers")
    prompts = [tokenizer.apply_chat_template(
        [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": prompt_text(rng, plan.prompt_words,
                                                                                          plan.config["vocab_size"])}],
        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"] for _ in range(streams)]
    config = GenerationConfig(max_new_tokens=plan.new_tokens, do_sample=False,
                              eos_token_id=plan.config["eos_token_id"], pad_token_id=tokenizer.pad_token_id)
    # The paged cache sized for this burst (by default it takes most of the free memory).
    longest = max(len(p) for p in prompts) + plan.new_tokens
    batching = ContinuousBatchingConfig(num_blocks=streams * -(-longest // 256) + 8,
                                        max_batch_tokens=max(1024, 4 * longest))
    loaded.generate_batch(inputs=prompts[:2], generation_config=config, continuous_batching_config=batching)
    started = time.perf_counter()
    out = loaded.generate_batch(inputs=prompts, generation_config=config, continuous_batching_config=batching)
    wall = time.perf_counter() - started
    tokens = sum(len(o.generated_tokens) for o in out.values())
    if not tokens:
        raise RuntimeError("generate_batch returned no tokens (see its log above)")
    del loaded
    _empty_device_cache(plan)
    result = {"streams": streams, "tokens": tokens, "seconds": round(wall, 3), "tokens_per_s": round(tokens / wall, 1)}
    log(f"transformers generate_batch {streams} prompts: {result['tokens_per_s']} tok/s")
    return result


# -- the device --------------------------------------------------------------------------------------
class MemorySampler:
    """Peak device memory in use (every process) per phase, sampled every 50 ms."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peaks: dict[str, int | None] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.device.startswith("cuda"):
            self.peaks[name] = None
            yield
            return
        import torch

        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                free, total = torch.cuda.mem_get_info(torch.device(self.device))
                peak[0] = max(peak[0], total - free)
                stop.wait(0.05)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peaks[name] = peak[0] >> 20


def measure_bandwidth(plan: Plan) -> float | None:
    """Device memory bandwidth in GB/s: reading plus writing a 2 GiB buffer, best of 10 copies."""
    if not plan.device.startswith("cuda"):
        return None
    import torch

    src = torch.empty(2 << 30, dtype=torch.uint8, device=plan.device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize()
        started = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    del src, dst
    torch.cuda.empty_cache()
    return round(2 * (2 << 30) / best / 1e9, 1)


def weight_bytes_per_token(config: dict[str, Any], nf4: bool) -> int:
    """Bytes of weights one decode step reads: every linear layer, and the LM head (bitsandbytes keeps it
    in bf16); nf4 stores 4 bits a weight plus a block scale every 64 (double-quantized: ~0.51 bytes)."""
    h, i, heads, kv = (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
                       config["num_key_value_heads"])
    head_dim = h // heads
    per_layer = h * (h + 2 * kv * head_dim) + h * h + 3 * h * i
    linear = per_layer * config["num_hidden_layers"]
    head = config["vocab_size"] * h * 2
    return int(linear * (0.5 + 1 / 128) if nf4 else linear * 2) + head


def _empty_device_cache(plan: Plan) -> None:
    import gc

    gc.collect()
    if plan.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def environment(plan: Plan) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "device": plan.device}
    with contextlib.suppress(ImportError):
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    with contextlib.suppress(ImportError):
        import peft

        info["peft"] = peft.__version__
    if plan.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mb=props.total_memory >> 20, cuda=torch.version.cuda)
    return info


def bound(result: dict[str, Any], bandwidth: float | None, weight_bytes: int) -> dict[str, Any]:
    if bandwidth is None:
        return {}
    limit = bandwidth * 1e9 / weight_bytes
    single = result["decode_tokens_per_s_per_stream"] or result["tokens_per_s"]
    return {"weights_gb_per_token": round(weight_bytes / 1e9, 2), "bound_tokens_per_s": round(limit, 1),
            "single_stream_share_of_bound": round(single / limit, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU with a tiny model")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--skip-full-precision", action="store_true", help="leave out the bf16 phase")
    args = parser.parse_args(argv)
    silence_known_noise()  # this process trains with bitsandbytes; the service's own does it in create_app
    plan = DRY if args.dry_run else REAL
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device is visible; use --dry-run to run the same code on the CPU")
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="aion-gpu-check-", dir=_scratch_root(plan)))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"plan": {"config": "Qwen2.5-7B-Instruct (random weights)" if not args.dry_run
                                       else "tiny Qwen2 (random weights)", "streams": plan.streams,
                                       "prompt_words": plan.prompt_words, "new_tokens": plan.new_tokens},
                              "environment": environment(plan), "ok": False}
    memory = MemorySampler(plan.device)

    def save() -> None:  # after every phase: a run cut short still leaves what it measured
        report["seconds"] = round(time.perf_counter() - started, 1)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))

    try:
        report["bandwidth_gb_s"] = bandwidth = measure_bandwidth(plan)
        model = work / "model"
        build_model(model, plan)
        with inference_service(model, plan, True, work) as url:
            report["nf4"] = streams_phase(url, plan, "nf4", memory)
            report["nf4_bound"] = bound(report["nf4"][0], bandwidth, weight_bytes_per_token(plan.config, True))
            save()
            with memory.phase("qlora"):
                report["qlora"] = train_and_gate(model, plan, work)
            report["qlora"]["peak_memory_mb"] = memory.peaks["qlora"]
            log(f"QLoRA: {report['qlora']['steps']} steps at {report['qlora']['seconds_per_step']} s/step; gate "
                f"{report['qlora']['gate']['decision']} in {report['qlora']['gate']['seconds']} s")
            save()
            report["adapter"] = adapter_phase(url, report["qlora"]["adapter"], plan, memory)
            save()
        if not args.skip_full_precision:
            with inference_service(model, plan, False, work) as url:
                report["full"] = streams_phase(url, plan, plan.dtype, memory)
                report["full_bound"] = bound(report["full"][0], bandwidth,
                                             weight_bytes_per_token(plan.config, False))
            save()
            try:  # a comparison, not a check of AION: its failure is recorded, not fatal
                report["transformers_generate_batch"] = transformers_batching(model, plan, max(plan.streams))
            except Exception as exc:
                report["transformers_generate_batch"] = {"error": f"{type(exc).__name__}: {exc}"}
        report["ok"] = True
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {report['error']}")
    finally:
        save()
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


def _scratch_root(plan: Plan) -> str | None:
    """/dev/shm when it has room for the model (it is written once and read twice), else the temp dir."""
    need = 20 << 30 if plan.device.startswith("cuda") else 1 << 30
    with contextlib.suppress(OSError):
        if shutil.disk_usage("/dev/shm").free > need:
            return "/dev/shm"
    return None


if __name__ == "__main__":
    sys.exit(main())
