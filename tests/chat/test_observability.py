"""Prometheus /metrics of the gateway, and request ids carried from the gateway into the inference log."""

from __future__ import annotations

import re
import uuid

import httpx
import psycopg
import pytest

from tests.chat.conftest import answer_events, closed_port_url, ledger_rows, sse

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the greenhouse roof vents open?"


def sample(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text page (0 when absent), labels matched exactly."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? ([0-9.e+-]+|NaN)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if found == labels:
            return float(match.group(4))
    return 0.0


def test_requests_answers_first_token_and_spend_are_counted(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok",
           "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok"}
    with chat_gateway(**env) as url:
        assert httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION}, timeout=60).status_code == 200
        events = sse(url, "/api/ai/chat/stream", params={"q": QUESTION})
        assert events[-1][0] == "done" and events[-1][1]["used"] == "local"
        forced = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION, "forceFallback": True}, timeout=60)
        assert forced.status_code == 200 and forced.json()["used"] == "fallback"
        missing = httpx.get(f"{url}/api/ai/documents/{uuid.uuid4()}", timeout=10)
        assert missing.status_code == 404
        page = httpx.get(f"{url}/metrics", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text

    assert sample(text, "aion_gateway_requests_total", route="/api/ai/chat", method="POST", status="200") == 2
    assert sample(text, "aion_gateway_requests_total", route="/api/ai/chat/stream", method="GET", status="200") == 1
    # The route template, not the raw path: ids never become label values.
    assert sample(text, "aion_gateway_requests_total", route="/api/ai/documents/{document_id}", method="GET",
                  status="404") == 1
    assert sample(text, "aion_gateway_request_seconds_count", route="/api/ai/chat/stream") == 1
    assert sample(text, "aion_gateway_answers_total", used="local", outcome="complete") == 2
    assert sample(text, "aion_gateway_answers_total", used="fallback", outcome="complete") == 1
    assert sample(text, "aion_gateway_time_to_first_token_seconds_count", used="local") == 2
    assert sample(text, "aion_gateway_time_to_first_token_seconds_count", used="fallback") == 1
    # Spend, and the budget gauges, agree with the ledger the budget guard wrote.
    spent = sum(r["cost"] for r in ledger_rows(clean_db))
    assert spent > 0
    assert sample(text, "aion_gateway_fallback_spend_usd_total") == pytest.approx(spent, rel=1e-6)
    assert sample(text, "aion_gateway_budget_spent_usd") == pytest.approx(spent, abs=1e-6)
    assert sample(text, "aion_gateway_budget_cap_usd") == 5.0
    assert sample(text, "aion_gateway_budget_remaining_usd") == pytest.approx(5.0 - spent, abs=1e-6)
    assert sample(text, "aion_gateway_requests_in_progress") == 1  # the scrape itself
    assert len(answer_events(clean_db)) == 3


def test_upstream_failures_are_counted(chat_gateway, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": closed_port_url(), "AION_LOCAL_RETRIES": 0,
           "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok"}
    with chat_gateway(**env) as url:
        r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION}, timeout=60)
        assert r.status_code == 200 and r.json()["used"] == "fallback"
        text = httpx.get(f"{url}/metrics", timeout=10).text
    assert sample(text, "aion_gateway_upstream_errors_total", upstream="local") == 1
    assert sample(text, "aion_gateway_upstream_errors_total", upstream="fallback") == 0
    assert sample(text, "aion_gateway_answers_total", used="fallback", outcome="complete") == 1


def test_request_id_reaches_the_inference_log(chat_gateway, clean_db, inference_server) -> None:
    rid = "trace-" + uuid.uuid4().hex[:12]
    with chat_gateway(AION_LOCAL_MAX_TOKENS=8) as url:
        r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION}, headers={"X-Request-ID": rid}, timeout=120)
    assert r.status_code == 200, r.text
    # The caller's id traces the request; the answer's id is the server's own (feedback addresses that).
    answer_id = r.json()["request_id"]
    assert r.headers["x-request-id"] == rid and answer_id != rid
    assert [(e["request_id"], e["correlation_id"]) for e in answer_events(clean_db)] == [(answer_id, rid)]
    # The retrieval is logged under the answer's id, so the two join.
    with psycopg.connect(clean_db) as conn:
        kinds = {row[0] for row in conn.execute("SELECT kind FROM ai_events WHERE request_id = %s", (answer_id,))}
    assert {"retrieval", "answer"} <= kinds
    # Both calls the gateway made for this question are logged by the inference service under the same id.
    lines = [line for line in inference_server.log_tail(400).splitlines() if f"[{rid}]" in line]
    assert any("/v1/embeddings" in line for line in lines), lines
    assert any("/v1/chat/completions" in line for line in lines), lines


def test_inference_exposes_queue_batch_adapter_and_first_token(inference_url) -> None:
    r = httpx.post(f"{inference_url}/v1/chat/completions", timeout=120, json={
        "model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    text = httpx.get(f"{inference_url}/metrics", timeout=10).text
    for family in ("aion_inference_queue_depth", "aion_inference_running_sequences",
                   "aion_inference_batch_size_count", "aion_inference_time_to_first_token_seconds_count",
                   "aion_inference_requests_total"):
        assert re.search(rf"^{family}(\{{.*\}})? ", text, re.M), family
    assert sample(text, "aion_inference_time_to_first_token_seconds_count") >= 1
    assert "# TYPE aion_inference_adapter_active gauge" in text
    assert "# TYPE aion_inference_adapter_sequences gauge" in text
