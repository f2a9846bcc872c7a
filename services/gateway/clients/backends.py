"""The inference backend behind the gateway and the trainer: AION's own service or vLLM.

Chat goes to either in the OpenAI dialect (clients/chat.py); what differs is adapter handling,
health and model listing, which live behind this one interface.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .inference_admin import InferenceAdmin
from .vllm_admin import VllmAdmin

BackendKind = Literal["aion", "vllm"]


class InferenceBackend(Protocol):
    kind: str
    base_url: str

    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]:
        """`status` (ready/loading/...), `base_model`, `adapter`, `adapters`, `backend` and what else it knows."""
        ...

    async def status(self) -> dict[str, Any]:
        """{"version", "health", "host"}: health plus the host's CPU, memory, disk and GPUs where it tells."""
        ...

    async def load(self, path: str, name: str, activate: bool) -> dict[str, Any]:
        """Make the adapter in `path` servable as `name`."""
        ...

    async def activate(self, name: str | None) -> dict[str, Any]:
        """Serve `name` (None: the base) to requests that name no adapter, where the backend has such a default."""
        ...

    async def unload(self, name: str) -> dict[str, Any]: ...

    async def adapters(self) -> dict[str, Any]: ...

    async def smoke(self, model: str, prompt: str = ...) -> str:
        """One short greedy generation on `model`; raises unless it returns text."""
        ...

    async def reload_default(self) -> dict[str, Any]: ...

    async def merge(self) -> dict[str, Any]: ...


def make_backend(kind: BackendKind, base_url: str, token: str | None, timeout_s: float = 120.0) -> InferenceBackend:
    return (VllmAdmin if kind == "vllm" else InferenceAdmin)(base_url, token, timeout_s=timeout_s)
