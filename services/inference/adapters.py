"""LoRA adapters: validated before they touch the model, versioned by content, swapped by the engine.

Every method that changes the model runs on the engine thread (Engine.run_op), so a load never
races a decode step. Requests name an adapter at admission and keep it until they finish; PEFT's
per-row `adapter_names` lets one batch mix adapters and the base weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import BadRequest, Conflict, NotFound

from .engine.runner import ModelRunner

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"  # the active adapter if one is active, else the base weights
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterRejected(BadRequest):
    code = "adapter_rejected"


@dataclass
class AdapterInfo:
    name: str
    path: str
    sha256: str
    rank: int | None
    target_modules: list[str]
    loaded_at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "rank": self.rank,
                "target_modules": self.target_modules, "loaded_at": self.loaded_at}


@dataclass
class CheckedAdapter:
    path: Path
    sha256: str
    config: dict[str, Any]
    weights: dict[str, Any]


def _module_for_key(key: str) -> str:
    # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj
    name = key.removeprefix("base_model.model.")
    return name.split(".lora_")[0]


def check_adapter(path: Path, model: Any) -> CheckedAdapter:
    """Reject anything that would fail or corrupt the model before it is touched."""
    if not path.is_dir():
        raise AdapterRejected(f"adapter folder {path} does not exist")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterRejected(f"{path} has no adapter_config.json; is it a PEFT adapter folder?")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterRejected(f"{config_file} is not valid JSON: {exc}") from exc
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterRejected(f"{path} holds a {config.get('peft_type')!r} adapter; only LoRA is served")
    weight_file = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weight_file is None:
        raise AdapterRejected(f"{path} has no adapter_model.safetensors")
    digest = hashlib.sha256(config_file.read_bytes())
    digest.update(weight_file.read_bytes())
    try:
        if weight_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(weight_file))
        else:
            import torch

            weights = torch.load(weight_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdapterRejected(f"{weight_file.name} in {path} is unreadable or corrupt: {exc}") from exc
    if not weights:
        raise AdapterRejected(f"{weight_file.name} in {path} holds no tensors")
    modules = dict(model.named_modules())
    for key, tensor in weights.items():
        if not bool(tensor.float().isfinite().all()):
            raise AdapterRejected(f"{key} in {path} holds NaN or infinite values")
        target = modules.get(_module_for_key(key)) or modules.get("base_model.model." + _module_for_key(key))
        if target is None:
            raise AdapterRejected(f"{path} targets {_module_for_key(key)}, which this base model does not have")
        base_layer = getattr(target, "base_layer", target)
        in_f, out_f = getattr(base_layer, "in_features", None), getattr(base_layer, "out_features", None)
        if ".lora_A." in key and in_f is not None and tensor.shape[-1] != in_f:
            raise AdapterRejected(f"{path} was trained for another base model ({key} expects {tensor.shape[-1]} "
                                  f"inputs, this model has {in_f})")
        if ".lora_B." in key and out_f is not None and tensor.shape[0] != out_f:
            raise AdapterRejected(f"{path} was trained for another base model ({key} has {tensor.shape[0]} "
                                  f"outputs, this model has {out_f})")
    return CheckedAdapter(path=path, sha256=digest.hexdigest(), config=config, weights=weights)


class AdapterManager:
    def __init__(self, runner: ModelRunner, base_name: str, four_bit: bool) -> None:
        self.runner = runner
        self.base_name = base_name
        self.four_bit = four_bit
        self.adapters: dict[str, AdapterInfo] = {}
        self.active: str | None = None
        self.merged: AdapterInfo | None = None
        self._names_by_sha: dict[str, str] = {}
        self._shas_by_name: dict[str, str] = {}  # every name ever used, so none is reused for other weights

    # -- reads (any thread) -------------------------------------------------------------------
    def resolve(self, model: str | None) -> str | None:
        """The adapter a request's `model` field selects (None = base weights)."""
        if model in (None, "", DEFAULT_ALIAS):
            return self.active
        if self.merged is not None:
            if model in (self.merged.name, self.base_name):
                if model == self.base_name:
                    raise Conflict(f"the base weights were merged with adapter '{self.merged.name}'; "
                                   "restart the inference service to serve the base model alone")
                return None
        if model == self.base_name:
            return None
        if model in self.adapters:
            return model
        if self.merged is not None and model in self._shas_by_name:
            raise Conflict(f"adapter '{model}' is not served since adapter '{self.merged.name}' was merged into the "
                           "base weights; restart the inference service to serve other adapters")
        known = ", ".join([DEFAULT_ALIAS, self.base_name, *self.adapters]) or "none"
        raise NotFound(f"model '{model}' is not loaded; available: {known}")

    def model_names(self) -> list[str]:
        names = [self.merged.name] if self.merged else [self.base_name]
        return names + list(self.adapters)

    def public(self) -> dict[str, Any]:
        return {"active": self.active, "merged": self.merged.public() if self.merged else None,
                "adapters": [a.public() for a in self.adapters.values()]}

    def default_name_for(self, path: Path, sha256: str) -> str:
        return f"{path.name}-{sha256[:8]}"

    # -- changes (engine thread only) ----------------------------------------------------------
    def load(self, checked: CheckedAdapter, name: str, activate: bool) -> AdapterInfo:
        if self.merged is not None:
            raise Conflict(f"adapter '{self.merged.name}' is merged into the base; restart the inference "
                           "service before loading other adapters")
        if name in (self.base_name, DEFAULT_ALIAS):
            raise BadRequest(f"'{name}' is reserved; choose another adapter name")
        previous_sha = self._shas_by_name.get(name)
        if previous_sha is not None and previous_sha != checked.sha256:
            raise Conflict(f"adapter name '{name}' was already used for different weights; "
                           "give the new weights a new version name")
        if name in self.adapters:
            if activate:
                self.active = name
            return self.adapters[name]
        self._inject(checked, name)
        info = AdapterInfo(name=name, path=str(checked.path), sha256=checked.sha256,
                           rank=checked.config.get("r"), target_modules=list(checked.config.get("target_modules") or []))
        self.adapters[name] = info
        self._names_by_sha[checked.sha256] = name
        self._shas_by_name[name] = checked.sha256
        if activate:
            self.active = name
        logger.info("adapter %s loaded from %s (active=%s)", name, checked.path, self.active)
        return info

    def _inject(self, checked: CheckedAdapter, name: str) -> None:
        from peft import PeftModel

        runner = self.runner
        if not runner.peft_wrapped:
            runner.model = PeftModel.from_pretrained(runner.model, str(checked.path), adapter_name=name,
                                                     is_trainable=False)
            runner.peft_wrapped = True
            return
        try:
            runner.model.load_adapter(str(checked.path), adapter_name=name, is_trainable=False)
        except Exception as exc:
            if name in getattr(runner.model, "peft_config", {}):
                runner.model.delete_adapter(name)
            raise AdapterRejected(f"could not load adapter from {checked.path}: {exc}") from exc

    def activate(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise NotFound(f"adapter '{name}' is not loaded")
        self.active = name

    def unload(self, name: str, in_use: dict[str, int]) -> None:
        if name not in self.adapters:
            raise NotFound(f"adapter '{name}' is not loaded")
        if in_use.get(name):
            raise Conflict(f"adapter '{name}' is serving {in_use[name]} request(s); retry when they finish")
        if self.active == name:
            raise Conflict(f"adapter '{name}' is active; activate another one (or the base) first")
        self.runner.model.delete_adapter(name)
        del self.adapters[name]
        if not self.adapters:
            # PEFT keeps naming a deleted last adapter as its active one, and then cannot find its own base
            # model: serve the plain base again (the next load wraps it anew).
            self.runner.model = self.runner.model.unload()
            self.runner.peft_wrapped = False

    def merge(self, load_base: Callable[[], Any], room_bytes: Callable[[int], int]) -> AdapterInfo:
        """Fold the active adapter into a fresh full-precision copy of the base weights (needs an empty batch).

        All or nothing: the merged model is built beside the serving one from the adapter bytes verified
        at load (their hash is checked again), and replaces it only once complete; a failure leaves the
        model and its adapters as they were. `load_base()` loads the base in full precision (merging into
        nf4 re-quantizes the sum and erases the update); `room_bytes(n)` is the memory left for n more
        bytes of weights, negative when they would not fit."""
        if self.merged is not None:
            raise Conflict(f"adapter '{self.merged.name}' is already merged")
        if self.active is None:
            raise Conflict("no active adapter to merge; load or activate one first")
        info = self.adapters[self.active]
        need = merged_bytes(self.runner.model)
        if room_bytes(need) < 0:
            raise Conflict(f"merging needs {need >> 20} MB for a full-precision copy of the base weights, more "
                           "than this machine has free beside the served model; keep serving the adapter "
                           "unmerged (per-request LoRA), or merge offline and serve the merged folder")
        checked = check_adapter(Path(info.path), self.runner.model)
        if checked.sha256 != info.sha256:
            raise Conflict(f"the files of adapter '{info.name}' in {info.path} changed since they were loaded; "
                           "load them again under a new version name before merging")
        merged = _merged_model(load_base(), checked, info.name)
        runner = self.runner
        runner.peft_wrapped = False
        runner.model = merged  # the old weights go with the last reference to them
        self.merged = info
        self.adapters.clear()
        self.active = None
        logger.info("adapter %s merged into the base weights", info.name)
        return info


def merged_bytes(model: Any) -> int:
    """What a full-precision copy of the base weights takes (4-bit weights count at the compute dtype)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = base.get_input_embeddings().weight.dtype
    return base.num_parameters() * dtype.itemsize


def _merged_model(base: Any, checked: CheckedAdapter, name: str) -> Any:
    """The base with the adapter's verified weights folded in, built from bytes already read and hashed."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

    config = PeftConfig.from_peft_type(**{k: v for k, v in checked.config.items()
                                          if k not in ("base_model_name_or_path", "revision")})
    config.inference_mode = True
    model = get_peft_model(base, config, adapter_name=name)
    result = set_peft_model_state_dict(model, checked.weights, adapter_name=name)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing or result.unexpected_keys:
        raise AdapterRejected(f"adapter '{name}' does not fit the base it was loaded on (missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]})")
    merged = model.merge_and_unload()
    merged.eval()
    return merged
