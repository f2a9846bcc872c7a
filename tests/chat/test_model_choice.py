"""A conversation chooses the model that answers it — the server's default, the base weights or one adapter
version from the registry — and the answer path honours it: the real inference service answers with
that adapter (loading an older version it no longer holds), the answer says which one answered, the
learning loop's record keeps it, and the response cache keeps each choice's answers apart."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.chat.conftest import TENANT, answer_events
from tests.fixtures.adapters import random_lora_adapters
from tests.fixtures.servers import run_inference

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the greenhouse roof vents open?"
FOLLOW_UP = "And when do they close?"


@pytest.fixture(scope="module")
def inference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An inference service of this module's own (it overrides the session's): the adapter it loads goes
    with it. The shared one cannot unload it again — unloading the only loaded adapter leaves PEFT naming
    it as its active one, and every later request fails — and a loaded adapter shows in other tests'
    model listings."""
    data = tmp_path_factory.mktemp("inference-model-choice")
    with run_inference(data, data / "logs") as service:
        yield service.url


def register(db: str, name: str, path: Path, status: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO adapters (id, tenant_id, name, path, base_model, status, metrics) "
                     "VALUES (%s, %s, %s, %s, 'smollm2-135m-instruct', %s, %s)",
                     (uuid.uuid4(), TENANT, name, str(path), status, json.dumps({})))


def test_a_conversation_answers_with_the_model_it_chose(chat_gateway, clean_db, inference_url, tmp_path) -> None:
    name = "pick-v1"
    (folder,) = random_lora_adapters(tmp_path, [name])
    register(clean_db, name, folder, "retired")  # an earlier version: registered, not loaded anywhere
    register(clean_db, f"{name}-gated", folder, "rejected")  # the gate refused it: never offered
    with chat_gateway() as url, httpx.Client(base_url=url, timeout=120) as c:
        options = c.get("/api/ai/chat/options").json()
        assert options["limits"] == {"max_question_chars": 2000}
        assert [(m["id"], m["kind"]) for m in options["models"]] == [
            ("default", "default"), ("base", "base"), (name, "adapter")]
        base = options["models"][1]["serves"]
        assert base and options["models"][0]["serves"] == base  # no active adapter: the default is the base

        # Unknown or refused names are the caller's to fix: 400 before anything is stored or answered.
        for bad in ("nope", f"{name}-gated"):
            r = c.post("/api/ai/chat", json={"message": QUESTION, "model": bad})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "unknown_model" and name in r.json()["error"]["message"]
        assert c.get("/api/ai/chat/stream", params={"q": QUESTION, "model": "nope"}).status_code == 400
        assert c.post("/api/ai/chat", json={"message": QUESTION, "model": "a\x00b"}).status_code == 422
        assert c.get("/api/ai/conversations").json()["total"] == 0

        first = c.post("/api/ai/chat", json={"message": QUESTION, "model": name}).json()
        assert (first["used"], first["model"], first["cached"]) == ("local", name, False)
        conversation = first["conversation_id"]
        assert c.get(f"/api/ai/conversations/{conversation}").json()["model"] == name
        health = httpx.get(f"{inference_url}/health").json()
        assert name in health["adapters"] and health["adapter"] is None  # loaded for it, not made the default
        record = answer_events(clean_db, first["request_id"])[0]
        assert (record["model"], record["model_choice"]) == (name, name)
        assert record["messages"][-1]["role"] == "user" and record["prompt_version"]  # the loop's record stands

        # The conversation keeps its choice: a follow-up that names none is answered by it too.
        second = c.post("/api/ai/chat", json={"message": FOLLOW_UP, "conversation_id": conversation}).json()
        assert second["model"] == name

        r = c.patch(f"/api/ai/conversations/{conversation}", json={"model": "base"})
        assert r.status_code == 200 and r.json()["model"] == "base" and r.json()["title"] == QUESTION
        third = c.post("/api/ai/chat", json={"message": "How warm is the greenhouse kept at night?",
                                             "conversation_id": conversation}).json()
        assert third["model"] == base
        assert c.patch(f"/api/ai/conversations/{conversation}", json={"model": "nope"}).status_code == 400
        assert c.patch(f"/api/ai/conversations/{conversation}", json={}).status_code == 422
        r = c.patch(f"/api/ai/conversations/{conversation}", json={"model": "default"})
        assert r.status_code == 200 and r.json()["model"] is None

        # The response cache keeps each choice's answers apart.
        other = c.post("/api/ai/chat", json={"message": QUESTION, "model": "base"}).json()
        assert (other["model"], other["cached"]) == (base, False)
        again = c.post("/api/ai/chat", json={"message": QUESTION, "model": name}).json()
        assert (again["model"], again["cached"]) == (name, True) and again["text"] == first["text"]
