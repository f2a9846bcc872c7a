"""Learning-loop tests: a real Postgres, events written as the answer path writes them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import psycopg

from services.gateway.services.answer_record import model_input
from services.gateway.services.language import choose_language
from services.gateway.services.prompt import (
    DEFAULT_RAG_SYSTEM_PROMPT,
    DEFAULT_RAG_SYSTEM_PROMPT_EN,
    PromptPassage,
    build_rag_messages,
)

TENANT = "test-tenant"
PASSAGE = PromptPassage(n=1, text="The lighthouse flashes every seven seconds.", source="Lighthouse — Lamp")


def rag_messages(question: str, history: list[dict[str, str]] | None = None,
                 passages: list[PromptPassage] | None = None) -> list[dict[str, str]]:
    """The messages the gateway sends the model for `question` (one passage unless given)."""
    language = choose_language(question)
    persona = DEFAULT_RAG_SYSTEM_PROMPT if language == "pt" else DEFAULT_RAG_SYSTEM_PROMPT_EN
    return build_rag_messages(question, [PASSAGE] if passages is None else passages,
                              language=language, persona=persona, history=history or [])


def add_answer(db: str, question: str, reply: str, *, when: datetime | None = None, complete: bool = True,
               tenant: str = TENANT, request_id: str | None = None, used: str = "fallback",
               history: list[dict[str, str]] | None = None, grounded: bool = True, **meta_extra: Any) -> str:
    """An answer event with the meta the answer path records (grounded: with the model's exact messages)."""
    request_id = request_id or uuid.uuid4().hex
    meta: dict[str, Any] = {"prompt": question, "reply": reply, "used": used, "model": "smollm2-135m-instruct",
                            "C": 0.8, "tau": 0.62, "complete": complete, "error": None, "finish_reason": "stop",
                            "sources": [{"document": "d1", "chunk": "1", "score": 0.8}], "chunk_ids": ["1"]}
    if grounded:
        meta.update(model_input(rag_messages(question, history), 64_000))
    meta.update(meta_extra)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta, request_id, created_at) "
                     "VALUES (%s, 'answer', %s, %s, %s, coalesce(%s, now()))",
                     (tenant, 1.0 if complete else 0.0, json.dumps(meta), request_id, when))
    return request_id


def add_feedback(db: str, answer_request_id: str, rating: str, tenant: str = TENANT) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta) VALUES (%s, 'feedback', %s, %s)",
                     (tenant, 1.0 if rating == "up" else -1.0,
                      json.dumps({"answer_request_id": answer_request_id, "rating": rating})))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
