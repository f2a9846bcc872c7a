"""Known-irrelevant library warnings, dropped where they are logged or warned.

Each entry names the logger (or the module whose `warnings.warn`) emits the message, how the message
starts, and why AION's user has nothing to do about it. Anything else those loggers say still shows. Installed once, early, by
every process that imports bitsandbytes or transformers: the inference service (`create_app`), the
trainer worker and `bench.gpu_check`.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    logger: str  # the name the library logs it under
    starts_with: str


KNOWN_NOISE = (
    # bitsandbytes, on a CPU with AVX512-BF16, asks the `kernels` package for an optional fused 4-bit
    # kernel from the Hugging Face Hub. AION runs with the hub offline (nothing reaches the internet at
    # run time), so `kernels` cannot verify the kernel's publisher; the fetch then fails (next entry).
    Noise("kernels._internals.hf_hub",
          "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"),
    # ...and bitsandbytes falls back to the 4-bit CPU kernel it ships, which computes the same product.
    # Its advice, to download the kernel while online, is what AION must not do at run time. It is logged
    # at import, so every process that loads bitsandbytes printed it, 4-bit model or not.
    Noise("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


# (category, module, how the message starts) of Python warnings, for `warnings.filterwarnings`.
KNOWN_WARNINGS = (
    # peft 0.21 reads transformers' `is_gradient_checkpointing`, which transformers 5 deprecates: one
    # library asking another, printed wherever an adapter is loaded (serving or training). It changes
    # nothing and the user can do nothing about it; it goes when peft reads the new name.
    (FutureWarning, "transformers.modeling_utils", "`is_gradient_checkpointing` is deprecated"),
)


class _DropKnownNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report, not ours to hide
            return True
        return not message.startswith(self.prefixes)


def silence_known_noise() -> None:
    """Attach the filters to the loggers that emit the known messages; safe to call more than once.

    Filters sit on the emitting loggers themselves (created here if the library is not imported yet),
    so they hold whatever handlers `configure_logging` installs later.
    """
    by_logger: dict[str, list[str]] = {}
    for noise in KNOWN_NOISE:
        by_logger.setdefault(noise.logger, []).append(noise.starts_with)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropKnownNoise)]:
            logger.removeFilter(old)
        logger.addFilter(_DropKnownNoise(tuple(prefixes)))
    for category, module, starts_with in KNOWN_WARNINGS:
        # filterwarnings drops an identical filter before adding it again: calling twice adds one.
        warnings.filterwarnings("ignore", message=re.escape(starts_with), category=category,
                                module=re.escape(module))
