"""Learning-loop tests: a real Postgres, events written as the answer path writes them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import psycopg

TENANT = "test-tenant"


def add_answer(db: str, question: str, reply: str, *, when: datetime | None = None, complete: bool = True,
               tenant: str = TENANT, request_id: str | None = None) -> str:
    request_id = request_id or uuid.uuid4().hex
    meta = {"prompt": question, "reply": reply, "used": "local", "model": "smollm2-135m-instruct", "C": 0.8,
            "complete": complete}
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
