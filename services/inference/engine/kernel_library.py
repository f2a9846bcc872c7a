"""The compiled CPU kernel library (cpu_kernels.c): built once with the system C compiler into a cache
folder, loaded with its C signatures declared. kernels.py holds the operations that call it.

Without a compiler, without AVX-512, or switched off (AION_QUANTIZED_DECODE=false), `kernel()` is None
and the decoder uses fp32 weights and torch's SDPA instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_kernels.c")
_CPU_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "fma", "f16c")  # as /proc/cpuinfo names them
_FLAGS = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "fma", "f16c")      # as gcc names them
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_error: str | None = None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_config = {"cache_dir": None, "enabled": True}


def configure(*, cache_dir: Path | None = None, enabled: bool = True) -> None:
    """Where the compiled library lives and whether to use it (the service's settings); call before the
    first model is loaded. A cache dir that already holds the library (an image built with
    `python -m services.inference.engine.kernels DIR`) needs no compiler at run time."""
    global _library, _load_error
    with _lock:
        _config.update(cache_dir=cache_dir, enabled=enabled)
        _library = _load_error = None


def _cache_dir() -> Path:
    if _config["cache_dir"] is not None:
        return Path(_config["cache_dir"])
    root = os.environ.get("XDG_CACHE_HOME")
    return (Path(root) if root else Path.home() / ".cache") / "aion" / "kernels"


def library_path(cache_dir: Path | None = None) -> Path:
    """The compiled library's path for this source and this torch build."""
    digest = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    return (cache_dir or _cache_dir()) / f"cpu-kernels-{digest}.so"


def build(cache_dir: Path | None = None) -> Path:
    """Compile the library into the cache dir (whatever CPU this runs on) unless it is there."""
    target = library_path(cache_dir)
    if not target.exists():
        _compile(target)
    return target


def _compile(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cpu-kernels-", suffix=".so", dir=target.parent)
    os.close(fd)
    cc = os.environ.get("CC", "cc")
    # -fopenmp links libgomp.so.1, the same soname torch loads: one thread pool for both.
    cmd = [cc, "-O3", *(f"-m{flag}" for flag in _FLAGS), "-fopenmp", "-shared", "-fPIC",
           str(_SOURCE), "-o", tmp, "-lm"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        os.chmod(tmp, 0o755)  # mkstemp made it private; an image's non-root user must be able to load it
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def kernel() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (with the reason logged once) when it cannot be had."""
    global _library, _load_error
    with _lock:
        if _library is not None or _load_error is not None:
            return _library
        try:
            if not _config["enabled"]:
                raise RuntimeError("disabled by AION_QUANTIZED_DECODE=false")
            if not set(_CPU_FLAGS) <= _cpu_flags():
                raise RuntimeError("the CPU lacks AVX-512")
            lib = ctypes.CDLL(str(build()))
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.q4_matmul.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64, ptr, i64, ctypes.c_int]
            lib.q8_matmul.argtypes = [ptr, i64, ptr, ptr, i64, i64, i64, ptr, i64, ctypes.c_int]
            lib.q4_matmul.restype = lib.q8_matmul.restype = None
            lib.lora_rows.argtypes = [ptr, ptr, i64, i64, ptr, i64, ctypes.c_int]
            lib.lora_rows.restype = None
            for name in ("q4_rows", "q8_rows"):
                getattr(lib, name).argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64, ptr, i64, ctypes.c_int]
                getattr(lib, name).restype = None
            lib.q4_pack.argtypes = [ptr, i64, ptr, ptr, ptr, ctypes.c_int]
            lib.q8_pack.argtypes = [ptr, i64, ptr, ptr, ctypes.c_int]
            lib.q4_pack.restype = lib.q8_pack.restype = i64
            lib.attend.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, ctypes.c_float, ptr, ptr, i64,
                                   ctypes.c_int]
            lib.attend.restype = ctypes.c_int
            lib.attend_causal.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, ctypes.c_float, ptr, ptr,
                                          ctypes.c_int]
            lib.attend_causal.restype = ctypes.c_int
            lib.rms_norm.argtypes = [ptr, ptr, i64, i64, ctypes.c_float, ptr, ctypes.c_int]
            lib.rms_norm.restype = None
            lib.silu_mul.argtypes = [ptr, ptr, i64, i64, i64, ptr, ctypes.c_int]
            lib.silu_mul.restype = None
            lib.rope.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, ctypes.c_int]
            lib.rope.restype = None
            lib.decode_work_floats.argtypes = [i64] * 7
            lib.decode_work_floats.restype = i64
            lib.decode_layers.argtypes = [i64, i64, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, ctypes.c_float,
                                          ctypes.c_float, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, ptr,
                                          ptr, ctypes.c_int]
            lib.decode_layers.restype = ctypes.c_int
            _library = lib
        except Exception as exc:  # no compiler, no AVX-512, read-only home...: decode in fp32
            _load_error = f"{type(exc).__name__}: {exc}"
            logger.info("block-quantized decode kernel unavailable (%s); decoding with fp32 weights", _load_error)
        return _library


def loaded() -> ctypes.CDLL | None:
    """The library if `kernel()` loaded it (no lock: for the operations' hot paths)."""
    return _library


if __name__ == "__main__":
    # Image builds: `python -m services.inference.engine.kernel_library DIR` compiles the library into DIR,
    # so that the final image (AION_KERNEL_CACHE_DIR=DIR) needs no compiler.
    import sys

    sys.stdout.write(f"{build(Path(sys.argv[1]) if len(sys.argv) > 1 else None)}\n")
