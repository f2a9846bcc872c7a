"""What a host has and uses: CPU, memory, the data dir's disk, and NVIDIA GPUs through NVML when the
optional `nvidia-ml-py` binding and a driver are there (`pip install 'aion[nvml]'`)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_GB = 1024 * _MB
_nvml_lock = threading.Lock()
_nvml_state: str | None = None  # None: not tried; "ok"; else why there is no GPU view


def host_stats(data_dir: Path) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        # Since the previous call (the first one since start says 0.0): no sampling wait in a request.
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": os.cpu_count(),
                "load_avg": [round(x, 2) for x in os.getloadavg()]},
        "memory": {"total_mb": memory.total // _MB, "used_mb": (memory.total - memory.available) // _MB,
                   "available_mb": memory.available // _MB, "percent": memory.percent},
        "process": {"rss_mb": psutil.Process().memory_info().rss // _MB},
        "disk": disk_stats(data_dir),
        "gpu": gpu_stats(),
    }


def disk_stats(path: Path) -> dict[str, Any]:
    """The file system holding `path` (its nearest existing parent before the first start)."""
    path = path.expanduser().resolve()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    return {"path": str(path), "total_gb": round(usage.total / _GB, 2), "used_gb": round(usage.used / _GB, 2),
            "free_gb": round(usage.free / _GB, 2), "percent": round(100 * usage.used / usage.total, 1)}


def gpu_stats() -> dict[str, Any]:
    """{"available": True, "devices": [...]} or {"available": False, "reason": ...}."""
    global _nvml_state
    try:
        import pynvml  # the `nvidia-ml-py` package's module
    except ImportError:
        return {"available": False, "reason": "NVML binding not installed (pip install 'aion[nvml]')"}
    with _nvml_lock:
        if _nvml_state is None:
            try:
                pynvml.nvmlInit()
                _nvml_state = "ok"
            except pynvml.NVMLError as exc:
                _nvml_state = f"no NVIDIA driver here ({exc})"
        if _nvml_state != "ok":
            return {"available": False, "reason": _nvml_state}
        try:
            devices = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                devices.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                                "memory_used_mb": mem.used // _MB, "memory_total_mb": mem.total // _MB,
                                "utilization_percent": util.gpu})
        except pynvml.NVMLError as exc:
            logger.warning("NVML query failed: %s", exc)
            return {"available": False, "reason": f"NVML query failed ({exc})"}
    return {"available": True, "devices": devices}


def aion_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aion")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
