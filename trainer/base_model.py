"""Load the base model for training with the inference service's loader (same weights, same fixes)."""

from __future__ import annotations

import logging

from services.inference.loader import (
    LoadedModel,
    choose_device,
    load_causal_lm,
    resolve_base_model,
    wants_4bit,
)

from .settings import TrainerSettings

logger = logging.getLogger(__name__)


def load_base(settings: TrainerSettings) -> LoadedModel:
    """The base model in nf4 or full precision, as the settings ask, with the bnb CPU flag fix applied."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    path = resolve_base_model(settings.lora_base, settings.cache_dir())
    device = choose_device(settings.device)
    loaded = load_causal_lm(path, device, wants_4bit(settings.load_in_4bit, device))
    logger.info("training base %s on %s (%s)", path, device, loaded.quantization)
    return loaded
