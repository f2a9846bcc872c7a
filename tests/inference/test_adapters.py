"""Hot-swapped LoRA adapters on the real model: reload, refuse a corrupt one, per-request choice, merge —
on both engine paths: the native decoder, and the model's own forward (what GPU hosts run) with the CPU
kernels off."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.inference.loader import load_causal_lm, resolve_base_model
from tests.fixtures.servers import MODEL_CACHE, ServiceProcess, run_inference

pytestmark = pytest.mark.slow

PROMPT = {"system": "You are a helpful assistant.", "prompt": "What is the capital of France?",
          "temperature": 0, "max_new_tokens": 20}


def build_adapter(target: Path, seed: int, scale: float) -> Path:
    """A real PEFT LoRA adapter on the real base, with non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False).model
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"a": build_adapter(root / "a", seed=1, scale=0.5), "b": build_adapter(root / "b", seed=2, scale=0.5)}


RUNNERS = {"native": {}, "transformers": {"AION_RUNNER": "transformers", "AION_QUANTIZED_DECODE": "false"}}


@pytest.fixture(scope="module", params=list(RUNNERS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("adapter-server")
    with run_inference(data, data / "logs", **RUNNERS[request.param]) as service:
        assert httpx.get(f"{service.url}/health").json()["runner"] == request.param
        yield service


def generate(url: str, **extra) -> str:
    r = httpx.post(f"{url}/generate", json={**PROMPT, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["text"]


def test_reload_changes_output_and_bad_adapters_are_refused(server: ServiceProcess, adapters, tmp_path) -> None:
    url = server.url
    base_text = generate(url)
    r = httpx.post(f"{url}/adapter/reload", json={"path": str(adapters["a"]), "name": "aion-v1"}, timeout=60)
    assert r.status_code == 200, r.text
    assert httpx.get(f"{url}/health").json()["adapter"] == "aion-v1"
    v1_text = generate(url)
    assert v1_text != base_text
    # The base stays addressable by its own name, per request.
    assert generate(url, adapter="smollm2-135m-instruct") == base_text

    corrupt = tmp_path / "corrupt"
    shutil.copytree(adapters["b"], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    r = httpx.post(f"{url}/adapter/reload", json={"path": str(corrupt), "name": "aion-v2"}, timeout=60)
    assert r.status_code == 400 and "corrupt" in r.json()["error"]["message"]
    missing = httpx.post(f"{url}/adapter/reload", json={"path": str(tmp_path / "nope")}, timeout=60)
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]["message"]
    assert httpx.get(f"{url}/health").json()["adapter"] == "aion-v1"
    assert generate(url) == v1_text

    # A name is never reused for other weights.
    reused = httpx.post(f"{url}/adapter/reload", json={"path": str(adapters["b"]), "name": "aion-v1"}, timeout=60)
    assert reused.status_code == 409 and "new version name" in reused.json()["error"]["message"]


def test_per_request_adapter_and_activation(server: ServiceProcess, adapters) -> None:
    url = server.url
    r = httpx.post(f"{url}/adapter/reload", json={"path": str(adapters["b"]), "name": "aion-v2",
                                                 "activate": False}, timeout=60)
    assert r.status_code == 200, r.text
    listed = httpx.get(f"{url}/adapters").json()
    assert {a["name"] for a in listed["adapters"]} >= {"aion-v1", "aion-v2"} and listed["active"] == "aion-v1"
    v1, v2 = generate(url, adapter="aion-v1"), generate(url, adapter="aion-v2")
    assert v1 != v2
    models = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert {"smollm2-135m-instruct", "aion-v1", "aion-v2"} <= models
    chat = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "aion-v2", "temperature": 0, "max_tokens": 20,
        "messages": [{"role": "system", "content": PROMPT["system"]}, {"role": "user", "content": PROMPT["prompt"]}]})
    assert chat.json()["choices"][0]["message"]["content"] == v2
    assert httpx.post(f"{url}/adapter/activate", json={"name": "aion-v2"}).status_code == 200
    assert generate(url) == v2
    assert httpx.post(f"{url}/adapter/activate", json={"name": "ghost"}).status_code == 404
    assert httpx.post(f"{url}/adapter/activate", json={"name": "aion-v1"}).status_code == 200


def test_a_merge_of_adapter_files_changed_since_their_load_is_refused_and_changes_nothing(
        server: ServiceProcess, adapters, tmp_path: Path) -> None:
    """The merge folds in the bytes verified at load: files rewritten since (a trainer re-pointing a folder)
    are refused, and the model, its adapters and what is active stay as they were."""
    from safetensors.torch import load_file, save_file

    url = server.url
    folder = tmp_path / "rewritten"
    shutil.copytree(adapters["b"], folder)
    r = httpx.post(f"{url}/adapter/reload", json={"path": str(folder), "name": "aion-v3"}, timeout=60)
    assert r.status_code == 200, r.text
    served = generate(url)
    weights = folder / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)
    merge = httpx.post(f"{url}/adapter/merge", timeout=120)
    assert merge.status_code == 409 and "changed since they were loaded" in merge.json()["error"]["message"]
    health = httpx.get(f"{url}/health").json()
    assert health["merged"] is False and health["adapter"] == "aion-v3"
    assert {"aion-v1", "aion-v2", "aion-v3"} <= set(health["adapters"])
    assert generate(url) == served
    assert httpx.post(f"{url}/adapter/activate", json={"name": "aion-v1"}).status_code == 200


def test_a_merge_that_would_not_fit_is_refused_before_touching_the_model(adapters) -> None:
    from services.inference.adapters import AdapterManager, check_adapter
    from services.inference.engine.native_runner import NativeRunner
    from shared.errors import Conflict

    loaded = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu")
    manager = AdapterManager(runner, "smollm2-135m-instruct", four_bit=False)
    manager.load(check_adapter(adapters["a"], runner.model), "aion-v1", activate=True)
    model = runner.model
    with pytest.raises(Conflict, match="merging needs"):
        manager.merge(lambda: pytest.fail("loaded a base it had no room for"), lambda need: -1)
    assert runner.model is model and manager.active == "aion-v1" and manager.merged is None


def test_unloading_the_last_adapter_serves_the_base_again(adapters) -> None:
    """PEFT keeps naming a deleted last adapter as its active one: every request after such an unload failed."""
    import torch

    from services.inference.adapters import AdapterManager, check_adapter
    from services.inference.engine.native_runner import NativeRunner

    loaded = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", False)
    runner = NativeRunner(loaded.model, loaded.tokenizer, "cpu")
    manager = AdapterManager(runner, "smollm2-135m-instruct", four_bit=False)
    ids = loaded.tokenizer("The orchard robot", add_special_tokens=False)["input_ids"]
    base_logits, _ = runner.prefill(ids, None)
    manager.load(check_adapter(adapters["a"], runner.model), "aion-v1", activate=False)
    manager.unload("aion-v1", {})
    assert not runner.peft_wrapped and not hasattr(runner.model, "peft_config")
    after, _ = runner.prefill(ids, None)
    torch.testing.assert_close(after, base_logits)
    # The next adapter wraps the base anew and serves.
    manager.load(check_adapter(adapters["b"], runner.model), "aion-v2", activate=True)
    assert runner.peft_wrapped
    served, _ = runner.prefill(ids, "aion-v2")
    assert not torch.allclose(served, base_logits)


def test_merge_keeps_the_adapter_output(server: ServiceProcess) -> None:
    url = server.url
    before = generate(url)  # active adapter aion-v1
    r = httpx.post(f"{url}/adapter/merge", timeout=120)
    assert r.status_code == 200, r.text
    health = httpx.get(f"{url}/health").json()
    assert health["merged"] is True and health["adapter"] == "aion-v1"
    assert generate(url) == before
    assert generate(url, adapter="aion-v1") == before
    again = httpx.post(f"{url}/adapter/merge", timeout=60)
    assert again.status_code == 409
    base = httpx.post(f"{url}/generate", json={**PROMPT, "adapter": "smollm2-135m-instruct"}, timeout=60)
    assert base.status_code == 409 and "restart" in base.json()["error"]["message"]
