"""AION_LOAD_IN_4BIT=true on CPU: nf4 serving, an adapter loaded after the first forward, and a safe merge."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.servers import ServiceProcess, run_inference
from tests.inference.test_adapters import build_adapter, generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nf4_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("nf4-server")
    with run_inference(data, data / "logs", AION_LOAD_IN_4BIT="true") as service:
        yield service


def test_nf4_serves_adapts_and_merges(nf4_server: ServiceProcess, tmp_path) -> None:
    url = nf4_server.url
    assert httpx.get(f"{url}/health").json()["quantization"] == "nf4"
    base_text = generate(url)  # the first forward happens before any adapter exists
    assert "Paris" in base_text
    adapter = build_adapter(tmp_path / "nf4-adapter", seed=3, scale=0.5)
    r = httpx.post(f"{url}/adapter/reload", json={"path": str(adapter), "name": "late-v1"}, timeout=60)
    assert r.status_code == 200, r.text
    adapted = generate(url)
    assert adapted != base_text
    assert "\ufffd" not in adapted and len(set(adapted.split())) > 2  # text, not repeated garbage
    r = httpx.post(f"{url}/adapter/merge", timeout=120)
    assert r.status_code == 200, r.text
    # The merge folds the adapter into the full-precision base (folding it into nf4 would re-quantize the
    # sum and erase it), so the weights differ from the served nf4 ones by the quantization error and the
    # greedy text may part at a near-tie; test_adapters checks the merge's arithmetic at full precision.
    health = httpx.get(f"{url}/health").json()
    assert health["merged"] is True and health["adapter"] == "late-v1" and health["quantization"] != "nf4"
    merged = generate(url)
    assert "Paris" in merged and "\ufffd" not in merged and len(set(merged.split())) > 2


def test_loader_turns_off_the_cpu_repack_that_breaks_late_adapters() -> None:
    """bitsandbytes repacks nf4 weights on CPUs with avx512-bf16 (not every machine has it), silently
    breaking gradients and adapters loaded later; the loader must switch that off on every 4-bit layer."""
    import bitsandbytes as bnb

    from services.inference.loader import load_causal_lm, resolve_base_model
    from tests.fixtures.servers import MODEL_CACHE

    model = load_causal_lm(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE), "cpu", True).model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) >= 30 * 7
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)
