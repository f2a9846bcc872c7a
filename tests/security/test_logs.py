"""No secret in the logs: a real `aion gateway` at DEBUG, driven through its paths that use secrets."""

from __future__ import annotations

import logging
import secrets

import httpx
import psycopg

from services.gateway.auth.keys import generate_key
from shared.redaction import REDACTED, register_secrets
from tests.fixtures.servers import ServiceProcess, base_env, free_port

from .conftest import dead_inference_url


def _insert_key(url: str) -> str:
    new_key = generate_key()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO api_keys (id, name, role, tenant_id, key_prefix, key_hash) "
                     "VALUES (gen_random_uuid(), 'ops', 'admin', 'default', %s, %s)", (new_key.prefix, new_key.hash))
    return new_key.key


def test_keys_tokens_and_provider_keys_never_reach_the_log(clean_db, tmp_path):
    key = _insert_key(clean_db)
    stranger = generate_key().key
    openai_key = "sk-test-" + secrets.token_hex(16)
    inference_token = "tok-" + secrets.token_hex(16)
    port = free_port()
    dead = dead_inference_url()
    env = base_env(tmp_path, DATABASE_URL=clean_db, AION_GATEWAY_HOST="127.0.0.1", AION_GATEWAY_PORT=str(port),
                   AION_DB_MIGRATE_ON_START="false", AION_LOG_LEVEL="DEBUG", AION_LOCAL_LLM_URL=dead,
                   AION_INFERENCE_TOKEN=inference_token, OPENAI_API_KEY=openai_key,
                   AION_FALLBACK_BASE_URL=f"{dead}/v1", AION_FALLBACK_RETRIES="0", AION_LOCAL_RETRIES="0")
    gateway = ServiceProcess(["gateway"], env, tmp_path / "gateway.log", f"http://127.0.0.1:{port}").start()
    try:
        gateway.wait_healthy(timeout=120)
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            auth = {"Authorization": f"Bearer {key}"}
            assert client.get("/api/ai/documents", headers=auth).status_code == 200
            assert client.get("/api/ai/documents", headers={"Authorization": f"Bearer {stranger}"}).status_code == 401
            # Someone pastes the provider's key, or puts a key in the URL where access logs see it.
            assert client.get("/api/ai/budget", headers={"Authorization": f"Bearer {openai_key}"}).status_code == 401
            assert client.get(f"/api/ai/documents?api_key={key}", headers=auth).status_code == 200
            # Calls that send the inference token and the provider key out (both ends are down).
            # (search tries the embeddings with the token, then answers from full text alone: 200)
            assert client.post("/api/ai/search", headers=auth, json={"q": "cofre"}).status_code == 200
            client.post("/api/ai/chat", headers=auth, json={"message": "Qual é a senha?", "forceFallback": True})
            client.post("/api/ai/llm/adapter/reload", headers=auth)
    finally:
        gateway.stop()
    log = gateway.log_path.read_text(errors="replace")
    # The log did record this traffic (so the check below looks at something).
    assert "refused an unknown or revoked API key" in log and "/api/ai/search" in log
    assert f"api_key={REDACTED}" in log  # the access log line, with the key taken out
    for name, secret in {"api key": key, "unknown key": stranger, "OPENAI_API_KEY": openai_key,
                         "AION_INFERENCE_TOKEN": inference_token}.items():
        assert secret not in log, f"the {name} is in the gateway log"


def test_the_redaction_net_catches_what_code_might_log(caplog):
    token = "tok-" + secrets.token_hex(16)
    key = generate_key().key
    register_secrets([token, "short"])
    log = logging.getLogger("tests.security.redaction")
    with caplog.at_level(logging.INFO, logger="tests.security.redaction"):
        log.info("calling inference with %s", token)
        log.info("header was %r", {"authorization": "Bearer abc.def-123"})
        log.info("a key in a URL: /api?key=%s", key)
        try:
            raise RuntimeError(f"connect failed for {token}")
        except RuntimeError:
            log.exception("boom")
        log.info("nothing secret: short words stay")
    text = caplog.text
    assert token not in text and key not in text and "abc.def-123" not in text
    assert text.count(REDACTED) >= 4 and "short words stay" in text
