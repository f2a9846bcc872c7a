"""The inference service SIGKILLed in the middle of a streamed answer.

The gateway must switch to the fallback (or, without one, end the stream with a clean `error` event),
and the `answer` event must still be logged. The killed process is this module's own inference
service; retrieval keeps using the session's, so only the generation dies.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.gateway.main import create_app
from tests.chat.conftest import answer_events, sse
from tests.faults.conftest import NO_RATE_LIMITS
from tests.fixtures.openai_standin import REPLY, run_standin
from tests.fixtures.servers import ServiceProcess, base_env, free_port, run_asgi
from tests.gateway.conftest import gateway_settings, kb_files

pytestmark = pytest.mark.slow

QUESTION = "Explain in detail how the greenhouse roof vents work and when they open."


@pytest.fixture(scope="module")
def doomed_inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An inference process of this module's own, (re)started on demand by `alive()`."""
    data = tmp_path_factory.mktemp("doomed-inference")
    port = free_port()
    env = base_env(data, AION_HOST="127.0.0.1", AION_PORT=str(port), AION_THREADS="1")
    service = ServiceProcess(["inference"], env, data / f"inference-{port}.log", f"http://127.0.0.1:{port}")
    yield service
    service.stop()


def alive(service: ServiceProcess) -> ServiceProcess:
    if service.proc is None or service.proc.poll() is not None:
        service.start()
        service.wait_healthy(timeout=180)
    return service


def stream_and_kill(url: str, victim: ServiceProcess, after_tokens: int = 2) -> list[tuple[str, dict]]:
    """Read the chat stream; SIGKILL the inference process once `after_tokens` tokens have arrived."""
    def kill_at_token(events: list[tuple[str, dict]]) -> None:
        if events[-1][0] == "token" and sum(n == "token" for n, _ in events) == after_tokens:
            victim.kill()

    return sse(url, "/api/ai/chat/stream", params={"q": QUESTION}, on_event=kill_at_token)


def _settings(db: str, inference_url: str, victim: ServiceProcess, **env):
    return gateway_settings(db, inference_url, AION_LOCAL_CHAT_URL=f"{victim.url}/v1", AION_LOCAL_RETRIES=0,
                            AION_LOCAL_MAX_TOKENS=300, AION_LOCAL_TEMPERATURE=0, **NO_RATE_LIMITS, **env)


def test_killed_mid_stream_continues_on_the_fallback(clean_db, inference_url, doomed_inference) -> None:
    victim = alive(doomed_inference)
    with run_standin() as standin:
        settings = _settings(clean_db, inference_url, victim, AION_FALLBACK_BASE_URL=standin.url,
                             AION_FALLBACK_MODEL="ok", OPENAI_API_KEY="test-key", AION_BUDGET_USD=1.0)
        with run_asgi(create_app(settings)) as url:
            assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=120).status_code in (200, 201)
            events = stream_and_kill(url, victim)
    assert victim.proc is not None and victim.proc.poll() is not None  # it really died mid-answer
    names = [n for n, _ in events]
    warn = next(d for n, d in events if n == "warn" and d["reason"] == "local_unavailable")
    assert warn["restart"] is True  # the client is told to drop the local model's partial text
    cut = names.index("warn")
    assert names[1:cut].count("token") >= 2
    assert "".join(d["text"] for n, d in events[cut:] if n == "token") == REPLY
    assert names[-1] == "done" and events[-1][1]["used"] == "fallback" and "error" not in names
    logged = answer_events(clean_db, events[-1][1]["request_id"])
    assert len(logged) == 1
    assert logged[0]["used"] == "fallback" and logged[0]["complete"] is True and logged[0]["reply"] == REPLY
    assert "local_unavailable" in logged[0]["warnings"]


def test_killed_mid_stream_without_fallback_ends_with_an_error_event(clean_db, inference_url,
                                                                     doomed_inference) -> None:
    victim = alive(doomed_inference)
    settings = _settings(clean_db, inference_url, victim, OPENAI_API_KEY=None, AION_FALLBACK_BASE_URL=None)
    with run_asgi(create_app(settings)) as url:
        assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=120).status_code in (200, 201)
        events = stream_and_kill(url, victim)
    names = [n for n, _ in events]
    assert names[-1] == "error" and "done" not in names, names
    error = events[-1][1]
    assert "local model failed" in error["message"] and "no fallback" in error["message"]
    partial = "".join(d["text"] for n, d in events if n == "token")
    logged = answer_events(clean_db, error["request_id"])
    assert len(logged) == 1
    assert logged[0]["complete"] is False and logged[0]["used"] == "local" and logged[0]["reply"] == partial
    assert logged[0]["error"] and "local_unavailable" in logged[0]["warnings"]


def test_inference_stopped_retrieves_by_full_text_and_the_fallback_answers(clean_db, inference_url,
                                                                           doomed_inference) -> None:
    """Embeddings and the local model both down (their process stopped): full-text retrieval still finds
    the passage, the stream says why C is 0, and the budgeted fallback answers from that passage."""
    victim = doomed_inference
    if victim.proc is None:  # run alone: start this module's inference process, to stop it
        alive(victim)
    if victim.proc is not None and victim.proc.poll() is None:
        victim.kill()
    with run_asgi(create_app(gateway_settings(clean_db, inference_url, **NO_RATE_LIMITS))) as url:
        assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=120).status_code == 201
    with run_standin() as standin:
        settings = gateway_settings(clean_db, victim.url, AION_LOCAL_RETRIES=0, AION_FALLBACK_BASE_URL=standin.url,
                                    AION_FALLBACK_MODEL="ok", OPENAI_API_KEY="test-key", AION_BUDGET_USD=1.0,
                                    AION_FALLBACK_SHARE_MIN_ANSWERS=1000, **NO_RATE_LIMITS)
        with run_asgi(create_app(settings)) as url:
            found = httpx.post(f"{url}/api/ai/search", json={"q": "Who was Agnes Morrow?"}, timeout=60)
            events = sse(url, "/api/ai/chat/stream", params={"q": "Who was Agnes Morrow?"})
        prompt = standin.calls[-1]["messages"][-1]["content"]
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["C"] == 0.0 and body["warnings"][0]["reason"] == "embeddings_unavailable"
    assert body["passages"][0]["document"] == "lighthouse.md" and "Agnes Morrow" in body["passages"][0]["text"]
    assert body["passages"][0]["ann_rank"] is None and body["passages"][0]["text_rank"] == 1

    names = [n for n, _ in events]
    assert names[0] == "sources" and events[0][1]["C"] == 0.0
    warns = [d["reason"] for n, d in events if n == "warn"]
    assert warns[:2] == ["embeddings_unavailable", "low_confidence"], warns
    assert "Agnes Morrow" in prompt  # the fallback answered from the passage full text found
    assert "".join(d["text"] for n, d in events if n == "token") == REPLY
    assert names[-1] == "done" and events[-1][1]["used"] == "fallback"
    assert "embeddings_unavailable" in events[-1][1]["warnings"]
