"""How many bytes the running batch's keys and values may take: AION_KV_CACHE_MB, or what the device has."""

from __future__ import annotations

import logging
import os

import torch

from shared.errors import AionError

from .engine.runner import ModelRunner
from .loader import is_cuda

logger = logging.getLogger(__name__)

_GPU_SHARE = 0.9  # of the memory left after loading (and after the margin below)


def kv_budget_bytes(setting_mb: int | None, device: str, runner: ModelRunner, max_batch_size: int) -> int:
    """The KV budget; never more than a full batch of full contexts needs."""
    position = runner.kv_position_bytes()
    most = max_batch_size * runner.max_context * position
    if setting_mb is not None:
        return min(setting_mb << 20, most)
    if is_cuda(device):
        free, total = torch.cuda.mem_get_info(torch.device(device))
        vocab = runner.model.get_input_embeddings().weight.shape[0]
        # Room left for a step's activations and the batch's fp32 logits (twice: sampling copies them).
        margin = max(1 << 30, total // 20) + 2 * max_batch_size * vocab * 4
        available = int((free - margin) * _GPU_SHARE)
        where = f"{device} ({free >> 20} MB free after loading)"
    else:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        where = "a quarter of the RAM"
    if available < runner.max_context * position // 8:
        raise AionError(f"too little memory left for the KV cache on {where}: one request of an eighth of the "
                        f"context needs {runner.max_context * position // 8 >> 20} MB; load the model in 4-bit "
                        "(AION_LOAD_IN_4BIT=true), use a smaller model, or set AION_KV_CACHE_MB")
    budget = min(most, available)
    logger.info("KV cache budget %d MB from %s (%d full-context rows)", budget >> 20, where,
                budget // (runner.max_context * position))
    return budget
