"""vLLM's OpenAI server as the chat backend: adapters loaded at run time, chosen per request by name.

vLLM keeps no default adapter: every request names the model it wants (the base, or a LoRA adapter
by the name it was loaded under), so "active" lives only in AION's registry and the gateway sends
that name (services/served_model.py). Loading at run time needs the server started with
`--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=true`.
"""

from __future__ import annotations

from typing import Any

from .inference_admin import AdminHttp, InferenceAdminError, error_message, not_on_backend


class VllmAdmin(AdminHttp):
    kind = "vllm"
    label = "vLLM"

    async def status(self) -> dict[str, Any]:
        """vLLM reports no host figures over HTTP (its /metrics has the engine's)."""
        health = await self.health()
        return {"version": health.get("version"), "health": health, "host": None}

    async def health(self) -> dict[str, Any]:
        """The admin panel's view, with the keys AION's /health has; `adapter` is filled from the registry."""
        r = await self._request("GET", "/health")
        if r.status_code != 200:
            return {"status": "unavailable", "backend": self.kind, "error": f"/health answered {r.status_code}"}
        models = await self.models()
        version = await self._request("GET", "/version")
        return {"status": "ready", "backend": self.kind, "error": None,
                "version": _json_field(version, "version"),
                "base_model": _base(models), "adapter": None, "adapter_loaded": False, "merged": False,
                "adapters": [m["id"] for m in models if m.get("parent")],
                "max_context": next((m.get("max_model_len") for m in models if not m.get("parent")), None),
                "device": None, "quantization": None, "embedding_model": None, "queue": None}

    async def models(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/models")).get("data") or [])

    async def base_model(self) -> str:
        """The name vLLM serves the base weights under (`--served-model-name`, else the `--model` path)."""
        base = _base(await self.models())
        if base is None:
            raise InferenceAdminError(f"vLLM at {self.base_url} lists no base model", status_code=503,
                                      code="inference_refused")
        return base

    async def load(self, path: str, name: str, activate: bool = False) -> dict[str, Any]:
        """Load a PEFT adapter under `name`; loading a name vLLM already holds is a no-op (names are never
        reused for other files). `activate` has no meaning here: requests choose the adapter."""
        r = await self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if r.status_code < 400 or (r.status_code == 400 and "already" in error_message(r).lower()):
            return {"ok": True, "adapter": {"name": name, "path": path}}
        if r.status_code in (401, 403):
            raise InferenceAdminError(f"vLLM at {self.base_url} refused the token: start it with VLLM_API_KEY equal "
                                      "to AION_INFERENCE_TOKEN", status_code=503, code="inference_refused")
        if r.status_code == 404 and error_message(r) == "Not Found":  # the route itself is missing
            raise InferenceAdminError(
                f"vLLM at {self.base_url} does not load adapters at run time: start it with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true", status_code=409, code="inference_refused")
        if r.status_code < 500:
            raise InferenceAdminError(
                f"vLLM could not load adapter '{name}' from {path}: {error_message(r)}. vLLM must see the trainer's "
                "adapters folder at the same path (compose: the adapters volume at /training/adapters)",
                status_code=409, code="inference_refused")
        raise InferenceAdminError(f"vLLM /v1/load_lora_adapter: {error_message(r)}", status_code=503,
                                  code="inference_refused")

    async def activate(self, name: str | None) -> dict[str, Any]:
        """Nothing to tell vLLM: the registry's active adapter is the name the gateway sends."""
        return {"ok": True, "active": name}

    async def unload(self, name: str) -> dict[str, Any]:
        """Free an adapter's slot; one vLLM does not hold is already unloaded."""
        r = await self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if r.status_code >= 400 and r.status_code not in (400, 404):
            raise InferenceAdminError(f"vLLM /v1/unload_lora_adapter: {error_message(r)}", status_code=503,
                                      code="inference_refused")
        return {"ok": True, "unloaded": name}

    async def adapters(self) -> dict[str, Any]:
        models = await self.models()
        return {"active": None, "merged": None, "base_model": _base(models),
                "adapters": [{"name": m["id"], "path": m.get("root")} for m in models if m.get("parent")]}

    async def reload_default(self) -> dict[str, Any]:
        raise not_on_backend("reloading AION_ADAPTER_DIR", self.kind,
                             "vLLM serves adapters by version: activate one in the adapter list "
                             "(POST /api/ai/adapters/{name}/activate)")

    async def merge(self) -> dict[str, Any]:
        raise not_on_backend("merging an adapter into the base", self.kind,
                             "vLLM serves LoRA adapters unmerged at full speed; activate the version instead")


def _base(models: list[dict[str, Any]]) -> str | None:
    return next((str(m["id"]) for m in models if not m.get("parent")), None)


def _json_field(r: Any, key: str) -> Any:
    try:
        return r.json().get(key)
    except (ValueError, AttributeError):
        return None
