"""What the lifespan builds: the engine, the adapters, the embedder — loaded in the background."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from .adapters import AdapterInfo, AdapterManager, check_adapter
from .embeddings import Embedder
from .engine import Engine, StreamEvent, kernel_library
from .engine.runner import choose_runner
from .generation import GenerationService
from .images import ImageGenerator
from .kv_budget import kv_budget_bytes
from .loader import (
    choose_device,
    compute_dtype,
    is_cuda,
    load_causal_lm,
    resolve_base_model,
    resolve_embed_model,
    wants_4bit,
)
from .metrics import InferenceMetrics
from .settings import NO_EMBEDDINGS, InferenceSettings

logger = logging.getLogger(__name__)


def served_name(model: str) -> str:
    """The id clients use for the base weights: a folder's name, or the hub id / default name."""
    path = Path(model)
    return path.name if (path.is_dir() or path.suffix == ".gguf") else model


def registered_name(folder: Path) -> str | None:
    """The registry's versioned name, written beside the weights by the trainer."""
    try:
        return str(json.loads((folder / "aion_adapter.json").read_text())["name"])
    except (OSError, ValueError, KeyError):
        return None


class InferenceState:
    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.metrics = InferenceMetrics()
        self.status = "loading"
        self.error: str | None = None
        self.base_name = served_name(settings.base_model)
        self.device: str | None = None
        self.model_path: str | None = None
        self.quantization: str | None = None
        self.engine: Engine | None = None
        self.adapters: AdapterManager | None = None
        self.generation: GenerationService | None = None
        self.embedder: Embedder | None = None
        # Apart from the text model: image requests neither wait for it nor fail with it.
        self.images = ImageGenerator(settings)
        self.started_at = time.time()
        self.load_seconds: float | None = None
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        if self.settings.image_preload:
            self.images.preload()
        self._thread = threading.Thread(target=self._load, name="aion-model-loader", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            import torch

            if self.settings.threads:
                torch.set_num_threads(self.settings.threads)
            if self.settings.embeddings_only:
                self._load_embedder_only(started)
                return
            kernel_library.configure(cache_dir=self.settings.kernel_cache_dir, enabled=self.settings.quantized_decode)
            device = choose_device(self.settings.device)
            four_bit = wants_4bit(self.settings.load_in_4bit, device)
            path = resolve_base_model(self.settings.base_model, self.settings.cache_dir())
            loaded = load_causal_lm(path, device, four_bit, self.settings.dtype)
            runner = choose_runner(loaded.model, loaded.tokenizer, device, choice=self.settings.runner,
                                   prefix_cache_bytes=self.settings.prefix_cache_mb * 2**20)
            runner.kv_budget_bytes = kv_budget_bytes(self.settings.kv_cache_mb, device, runner,
                                                     self.settings.max_batch_size)
            engine = Engine(runner, max_batch_size=self.settings.max_batch_size, max_queue=self.settings.max_queue,
                            on_step=self._on_step, on_prefill=self.metrics.prefill_seconds.observe,
                            on_finish=self._on_finish)
            adapters = AdapterManager(runner, self.base_name, four_bit)
            if self.settings.embed_model != NO_EMBEDDINGS:
                embed_path = resolve_embed_model(self.settings.embed_model)
                self.embedder = Embedder(embed_path, device, served_name(self.settings.embed_model))
            self.device, self.quantization, self.model_path = device, loaded.quantization, path
            self.adapters = adapters
            self.generation = GenerationService(engine, loaded.tokenizer, self.settings, adapters, runner.max_context)
            engine.start()
            self.engine = engine
            self._load_startup_adapter()
            self.status = "ready"
            self.load_seconds = time.perf_counter() - started
            logger.info("inference ready: %s on %s (%s, %s runner) in %.1f s", self.base_name, device,
                        loaded.quantization, runner.kind, self.load_seconds)
        except Exception as exc:
            logger.exception("model loading failed")
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"

    def _load_embedder_only(self, started: float) -> None:
        device = choose_device(self.settings.device)
        self.embedder = Embedder(resolve_embed_model(self.settings.embed_model), device,
                                 served_name(self.settings.embed_model))
        self.device = device
        self.status = "ready"
        self.load_seconds = time.perf_counter() - started
        logger.info("inference ready, embeddings only: %s on %s in %.1f s", self.embedder.name, device,
                    self.load_seconds)

    def _load_startup_adapter(self) -> None:
        """Seed behaviour: serve AION_ADAPTER_DIR when it holds an adapter; start without it otherwise."""
        folder = self.settings.adapter_dir
        if not folder or not (Path(folder) / "adapter_config.json").is_file():
            return
        assert self.engine and self.adapters
        adapters = self.adapters
        try:
            checked = check_adapter(Path(folder), self.engine.runner.model)
            name = registered_name(Path(folder)) or adapters.default_name_for(Path(folder), checked.sha256)
            self.engine.run_op(lambda: adapters.load(checked, name, activate=True)).result()
            self.metrics.adapter_active.labels(adapter=name).set(1)
        except Exception as exc:
            logger.warning("adapter in %s not loaded: %s; serving the base model", folder, exc)

    def merge_active(self) -> AdapterInfo:
        """Fold the active adapter into the base weights (engine thread, empty batch: a barrier op)."""
        assert self.engine and self.adapters and self.device and self.model_path
        engine, runner, device, path = self.engine, self.engine.runner, self.device, self.model_path
        engine.reset_batch()  # an empty batch may still hold its slots: give them back first
        dtype = self.settings.dtype
        info = self.adapters.merge(lambda: load_causal_lm(path, device, False, dtype).model, self._room_for)
        engine.weights_version += 1
        self.quantization = f"{str(compute_dtype(device, dtype)).removeprefix('torch.')} (merged: {info.name})"
        try:  # full-precision weights leave less memory for keys and values
            runner.kv_budget_bytes = kv_budget_bytes(self.settings.kv_cache_mb, device, runner,
                                                     self.settings.max_batch_size)
        except Exception as exc:
            logger.warning("KV budget kept at %d MB after the merge: %s", (runner.kv_budget_bytes or 0) >> 20, exc)
        engine.reset_batch()
        return info

    def _room_for(self, weight_bytes: int) -> int:
        """Memory left (bytes) after `weight_bytes` more of weights and a margin; negative: they do not fit."""
        import torch

        assert self.device
        margin = 1 << 30
        if is_cuda(self.device):
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            return free - weight_bytes - margin
        available = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                          if line.startswith("MemAvailable:")), 0)
        return available - weight_bytes - margin

    def _on_step(self, rows: int, forward_s: float, tokens_s: float) -> None:
        self.metrics.batch_size.observe(rows)
        self.metrics.running.set(rows)
        self.metrics.step_forward_seconds.observe(forward_s)
        self.metrics.step_tokens_seconds.observe(tokens_s)

    def _on_finish(self, event: StreamEvent) -> None:
        m = self.metrics
        m.generated_tokens.inc(event.completion_tokens)
        m.prompt_tokens.inc(event.prompt_tokens)
        m.finished.labels(reason=event.finished.value if event.finished else "unknown").inc()
        if event.first_token_s is not None:
            m.time_to_first_token.observe(event.first_token_s)
        if event.error:
            m.errors.inc()

    def served_model_name(self, adapter: str | None) -> str:
        if adapter:
            return adapter
        if self.adapters and self.adapters.merged:
            return self.adapters.merged.name
        return self.base_name

    def health(self) -> dict[str, Any]:
        adapters = self.adapters.public() if self.adapters else {"active": None, "merged": None, "adapters": []}
        stats = self.engine.stats() if self.engine else None
        return {
            "status": self.status,
            "error": self.error,
            "mode": "embeddings-only" if self.settings.embeddings_only else "chat+embeddings",
            "base_model": None if self.settings.embeddings_only else self.base_name,
            "adapter_loaded": bool(adapters["active"] or adapters["merged"]),
            "adapter": adapters["active"] or (adapters["merged"] or {}).get("name"),
            "merged": bool(adapters["merged"]),
            "adapters": [a["name"] for a in adapters["adapters"]],
            "device": self.device,
            "quantization": self.quantization,
            "embedding_model": self.embedder.name if self.embedder else None,
            "max_context": self.generation.max_context if self.generation else None,
            "max_new_tokens": self.settings.max_new_tokens,
            "runner": stats.runner if stats else None,
            "queue": {"waiting": stats.waiting, "running": stats.running,
                      "max_batch_size": stats.max_batch_size} if stats else None,
            "kv_cache": {"allocated_mb": stats.kv_cache_bytes >> 20,
                         "budget_mb": stats.kv_budget_bytes >> 20 if stats.kv_budget_bytes else None}
            if stats else None,
            "uptime_s": round(time.time() - self.started_at, 1),
            "load_seconds": round(self.load_seconds, 2) if self.load_seconds else None,
            "images": self.images.public(),
        }

    def shutdown(self) -> None:
        self.images.close()
        if self.engine:
            self.engine.stop()
