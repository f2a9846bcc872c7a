"""GET /api/status and /api/models(/detailed) on the real stack (the real inference service and Postgres)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from shared.host_stats import gpu_stats
from tests.fixtures.servers import free_port

TENANT = "test-tenant"


async def test_status_reports_every_service_and_the_hosts(make_gateway, tmp_path: Path) -> None:
    async with make_gateway(AION_DATA_DIR=str(tmp_path)) as client:
        r = await client.get("/api/status")
    assert r.status_code == 200, r.text
    body = r.json()
    services = body["services"]
    assert body["status"] == "ok"
    gateway = services["gateway"]
    assert gateway["status"] == "ready" and gateway["version"]
    host = gateway["host"]
    assert host["cpu"]["count"] >= 1 and 0 <= host["cpu"]["percent"] <= 100
    assert 0 < host["memory"]["used_mb"] < host["memory"]["total_mb"] and host["process"]["rss_mb"] > 0
    assert host["disk"]["path"] == str(tmp_path.resolve()) and host["disk"]["free_gb"] > 0
    assert host["gpu"]["available"] in (True, False) and ("devices" in host["gpu"] or host["gpu"]["reason"])
    inference = services["inference"]
    assert inference["status"] == "ready" and inference["backend"] == "aion" and inference["version"]
    engine = inference["engine"]
    assert engine["runner"] and engine["queue"]["waiting"] >= 0 and engine["queue"]["max_batch_size"] >= 1
    assert engine["kv_cache"]["allocated_mb"] >= 0 and inference["host"]["memory"]["total_mb"] > 0
    assert services["database"]["status"] == "ready" and services["database"]["pgvector"]
    assert services["scheduler"]["status"] == "not_started" and services["fallback"] == {"status": "off"}


async def test_status_says_which_part_is_down_and_still_answers(make_gateway) -> None:
    async with make_gateway(AION_LOCAL_LLM_URL=f"http://127.0.0.1:{free_port()}") as client:
        body = (await client.get("/api/status")).json()
    assert body["status"] == "degraded"
    assert body["services"]["inference"]["status"] == "unreachable" and body["services"]["inference"]["error"]
    assert body["services"]["database"]["status"] == "ready" and body["services"]["gateway"]["host"]


async def test_models_detailed_has_the_base_adapters_with_gate_numbers_and_embeddings(make_gateway, clean_db) -> None:
    gate = {"decision": "promote", "candidate": {"containment": 0.8}, "current": {"containment": 0.7}}
    with psycopg.connect(clean_db) as conn:
        conn.execute("INSERT INTO adapters (id, tenant_id, name, path, base_model, status, metrics) "
                     "VALUES (%s, %s, 'aion-v1', '/nowhere', 'smollm2', 'candidate', %s)",
                     (uuid.uuid4(), TENANT, json.dumps({"gate": gate, "train": {"steps": 16}})))
    async with make_gateway(OPENAI_API_KEY="sk-test", AION_FALLBACK_MODEL="gpt-4o-mini") as client:
        detailed = (await client.get("/api/models/detailed")).json()
        listed = (await client.get("/api/models")).json()
    base = detailed["base"]
    assert base["status"] == "ready" and base["name"] and base["context_length"] >= 2048
    assert base["quantization"] and base["device"] == "cpu" and base["runner"]
    assert detailed["adapters"] == [{**detailed["adapters"][0], "name": "aion-v1", "loaded": False, "active": False,
                                     "status": "candidate", "gate": gate}]
    assert detailed["embedding"]["dimension"] == 384 and "minilm" in detailed["embedding"]["model"].lower()
    assert detailed["fallback"]["model"] == "gpt-4o-mini" and detailed["fallback"]["usd_per_million_tokens"]["input"] > 0
    assert "sk-test" not in json.dumps(detailed)
    kinds = {m["kind"]: m for m in listed["data"]}
    assert kinds["chat"]["id"] == base["name"] and kinds["embedding"]["dimension"] == 384
    assert kinds["fallback"]["id"] == "gpt-4o-mini" and "adapter" not in kinds  # registered, not loaded


def test_gpu_view_is_optional() -> None:
    gpu = gpu_stats()
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert gpu == {"available": False, "reason": "NVML binding not installed (pip install 'aion[nvml]')"}
    else:
        assert gpu["available"] or "driver" in gpu["reason"] or "NVML" in gpu["reason"]
