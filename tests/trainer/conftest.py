"""Trainer tests run the real default model on CPU, on one torch thread.

Measured on this shared 2-core machine with other processes busy: a training step took 24 s on
2 threads and 3.4 s on 1 (OpenMP threads wait on each other when a core is taken). FINDINGS has
1.0-1.5 s per step on 2 idle threads: one thread loses little when idle and a lot less when not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.servers import MODEL_CACHE
from trainer.settings import TrainerSettings

# SmolLM2-135M's weights, as trainer.model_size.count_parameters counts them.
SMOLLM2_PARAMETERS = 134_515_008


def trainer_settings(data_dir: Path, **overrides: object) -> TrainerSettings:
    """Settings for a test: the shared converted model cache, CPU, the given AION_TRAIN_* values, and the
    size-dependent ones the worker would choose for the default model."""
    values: dict[str, object] = {"AION_DATA_DIR": str(data_dir), "AION_MODEL_CACHE_DIR": str(MODEL_CACHE),
                                 "AION_TRAIN_DEVICE": "cpu", "AION_TRAIN_THREADS": 1}
    values.update(overrides)
    return TrainerSettings(**values).for_model(SMOLLM2_PARAMETERS)


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
