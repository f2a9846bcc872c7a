"""Conversations kept by the server: continued by id from a new client, listed, searched, renamed and
deleted, each key seeing its own; and forceFallback/tau honoured for admin keys only."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest

from tests.chat.conftest import answer_events, ledger_rows, new_key
from tests.fixtures.openai_standin import REPLY

pytestmark = pytest.mark.slow

QUESTION = "At what temperature do the greenhouse roof vents open?"
FOLLOW_UP = "And when do they close?"


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_a_conversation_is_continued_by_id_after_a_reload_and_belongs_to_its_key(chat_gateway, clean_db,
                                                                                 standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_AUTH": "on",
           "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        alice, bob, admin = new_key(clean_db, "user"), new_key(clean_db, "user"), new_key(clean_db, "admin")
        with client(url, alice) as tab:
            first = tab.post("/api/ai/chat", json={"message": QUESTION}).json()
        conversation = first["conversation_id"]
        assert uuid.UUID(conversation) and first["text"] == REPLY

        with client(url, alice) as reloaded:  # a new client: nothing but the id survives the reload
            listed = reloaded.get("/api/ai/conversations").json()
            assert [(c["id"], c["title"], c["turn_count"]) for c in listed["items"]] == [(conversation, QUESTION, 2)]
            second = reloaded.post("/api/ai/chat", json={"message": FOLLOW_UP, "conversation_id": conversation}).json()
            assert second["conversation_id"] == conversation
            sent = standin.calls[-1]["messages"]
            assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
            assert sent[1]["content"] == QUESTION and sent[2]["content"] == REPLY and sent[3]["content"] == FOLLOW_UP
            detail = reloaded.get(f"/api/ai/conversations/{conversation}").json()
            assert [(t["role"], t["content"]) for t in detail["turns"]] == [
                ("user", QUESTION), ("assistant", REPLY), ("user", FOLLOW_UP), ("assistant", REPLY)]
            answer = detail["turns"][3]
            assert answer["request_id"] == second["request_id"] and answer["meta"]["used"] == "local"
            assert answer["meta"]["sources"][0]["n"] == 1 and "support" in answer["meta"]
            assert detail["turns"][2]["meta"]["rewritten"] == second["rewritten"]

            renamed = reloaded.patch(f"/api/ai/conversations/{conversation}", json={"title": "  Vents\n schedule "})
            assert renamed.status_code == 200 and renamed.json()["title"] == "Vents schedule"
            assert reloaded.get("/api/ai/conversations", params={"q": "close?"}).json()["total"] == 1  # turn text
            assert reloaded.get("/api/ai/conversations", params={"q": "VENTS sch"}).json()["total"] == 1  # title
            assert reloaded.get("/api/ai/conversations", params={"q": "bicycle"}).json()["total"] == 0
            assert reloaded.patch(f"/api/ai/conversations/{conversation}", json={"title": " "}).status_code == 422

        with client(url, bob) as other:  # another user's key neither sees nor continues it
            assert other.get("/api/ai/conversations").json()["total"] == 0
            assert other.get(f"/api/ai/conversations/{conversation}").status_code == 404
            r = other.post("/api/ai/chat", json={"message": FOLLOW_UP, "conversation_id": conversation})
            assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
            assert other.delete(f"/api/ai/conversations/{conversation}").status_code == 404
            both = other.post("/api/ai/chat", json={"message": FOLLOW_UP, "conversation_id": conversation,
                                                    "history": [{"role": "user", "content": QUESTION}]})
            assert both.status_code == 400

        with client(url, admin) as boss:  # admin sees every conversation of the tenant
            assert boss.get("/api/ai/conversations").json()["total"] == 1
            assert boss.delete(f"/api/ai/conversations/{conversation}").json() == {"id": conversation, "deleted": True}
            assert boss.get(f"/api/ai/conversations/{conversation}").status_code == 404
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*) FROM conversation_turns").fetchone()[0] == 0  # deleted with it


def test_force_fallback_and_tau_are_honoured_for_admin_keys_only(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_FALLBACK_BASE_URL": standin.url,
           "AION_FALLBACK_MODEL": "paid", "AION_AUTH": "on", "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        user, admin = new_key(clean_db, "user"), new_key(clean_db, "admin")
        with client(url, user) as c:
            out = c.post("/api/ai/chat", json={"message": QUESTION, "forceFallback": True, "tau": 0.99}).json()
        assert out["used"] == "local" and "admin_only_option" in out["warnings"]
        assert "low_confidence" not in out["warnings"]  # the server's τ applied, not the caller's
        assert [c["model"] for c in standin.calls] == ["ok"] and ledger_rows(clean_db) == []  # no paid call
        assert answer_events(clean_db, out["request_id"])[0]["forced"] is False
        with client(url, admin) as c:
            forced = c.post("/api/ai/chat", json={"message": QUESTION, "forceFallback": True, "store": False}).json()
        assert forced["used"] == "fallback" and standin.calls[-1]["model"] == "paid"
        assert "admin_only_option" not in forced["warnings"] and len(ledger_rows(clean_db)) == 1


def test_aion_ask_names_the_two_numbers_and_continues_a_conversation(chat_gateway, clean_db, standin) -> None:
    env = {"AION_LOCAL_CHAT_URL": standin.url, "AION_LOCAL_MODEL": "ok", "AION_AUTH": "on",
           "AION_TAU_CONFIDENCE": 0.3}
    with chat_gateway(**env) as url:
        cli_env = {**os.environ, "AION_API_KEY": new_key(clean_db, "user"), "AION_GATEWAY_URL": url}

        def aion_ask(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "aion", "ask", *args], env=cli_env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout

        first = aion_ask(QUESTION)
        assert REPLY in first and "local model · retrieval match 0." in first and "· answer support " in first
        conversation = first.split("conversation ")[1].split(" ")[0]
        second = aion_ask("--conversation", conversation, FOLLOW_UP)
        assert f"conversation {conversation}" in second
    assert [m["role"] for m in standin.calls[-1]["messages"]] == ["system", "user", "assistant", "user"]
