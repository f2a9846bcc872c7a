"""Logged answers → training JSONL: window, feedback, de-dup, PII, formats, atomic write, watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.gateway.services.export import Exporter, ExportFailed
from tests.loop.conftest import TENANT, add_answer, add_feedback, read_jsonl

SYSTEM = "Você é a AION."


async def test_window_feedback_dedup_and_pii(sessions, clean_db, tmp_path) -> None:
    now = datetime.now(UTC)
    add_answer(clean_db, "old question", "old reply", when=now - timedelta(days=10))
    kept = add_answer(clean_db, "Qual o e-mail do suporte?", "Escreva para suporte@exemplo.com ou ligue (11) 98765-4321.")
    add_answer(clean_db, "Qual o e-mail do suporte?", "Escreva para suporte@exemplo.com ou ligue (11) 98765-4321.")
    add_answer(clean_db, "cut short", "partial", complete=False)
    bad = add_answer(clean_db, "Pergunta ruim", "Resposta errada")
    add_feedback(clean_db, bad, "down")
    liked = add_answer(clean_db, "Meu CPF 123.456.789-09 e cartão 4111 1111 1111 1111", "Servidor 10.0.0.7, CNPJ 12.345.678/0001-95")
    add_feedback(clean_db, liked, "up")
    add_answer(clean_db, "other tenant", "secret", tenant="someone-else")

    out = tmp_path / "events.jsonl"
    result = await Exporter(sessions, SYSTEM).export(tenant_id=TENANT, out=out, days=2)
    rows = read_jsonl(out)
    assert result.rows == len(rows) == 2
    assert result.skipped == {"incomplete": 1, "negative_feedback": 1, "duplicate": 1, "empty": 0}
    first, second = rows
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == SYSTEM and first["meta"]["request_id"] == kept
    text = out.read_text(encoding="utf-8")
    for secret in ("suporte@exemplo.com", "98765-4321", "123.456.789-09", "4111 1111 1111 1111", "10.0.0.7",
                   "12.345.678/0001-95", "old reply", "secret", "Resposta errada"):
        assert secret not in text
    for placeholder in ("[EMAIL]", "[TELEFONE]", "[CPF]", "[CARTAO]", "[IP]", "[CNPJ]"):
        assert placeholder in text
    assert "ç" in second["messages"][1]["content"] or "Meu" in second["messages"][1]["content"]


async def test_seed_format(sessions, clean_db, tmp_path) -> None:
    add_answer(clean_db, "Qual a cor do céu?", "Azul.")
    out = tmp_path / "seed.jsonl"
    await Exporter(sessions, SYSTEM).export(tenant_id=TENANT, out=out, days=1, fmt="seed")
    assert read_jsonl(out) == [{"kind": "answer", "meta": read_jsonl(out)[0]["meta"]}]
    meta = read_jsonl(out)[0]["meta"]
    assert meta["prompt"] == "Qual a cor do céu?" and meta["reply"] == "Azul."


async def test_a_failed_write_keeps_the_previous_file_and_is_recorded(sessions, clean_db, tmp_path) -> None:
    add_answer(clean_db, "q", "a")
    out = tmp_path / "events.jsonl"
    out.write_text('{"previous": true}\n')
    # The target's parent is a file: nothing can be created there, as on a full or read-only disk.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    with pytest.raises(ExportFailed, match="cannot write the export"):
        await Exporter(sessions, SYSTEM).export(tenant_id=TENANT, out=blocked / "events.jsonl", days=1)
    assert out.read_text() == '{"previous": true}\n'
    assert not list(tmp_path.glob(".events.jsonl.*.tmp"))
    with psycopg.connect(clean_db) as conn:
        status, error = conn.execute("SELECT status, error FROM export_runs ORDER BY created_at DESC LIMIT 1").fetchone()
    assert status == "failed" and "cannot write" in error


async def test_nightly_exports_only_what_is_new(sessions, clean_db, tmp_path) -> None:
    exporter = Exporter(sessions, SYSTEM)
    add_answer(clean_db, "first question", "first answer")
    first = await exporter.export(tenant_id=TENANT, out=tmp_path / "n1.jsonl", days=1, trigger="nightly")
    assert first.rows == 1
    again = await exporter.export(tenant_id=TENANT, out=tmp_path / "n2.jsonl", days=1, trigger="nightly")
    assert again.rows == 0 and read_jsonl(tmp_path / "n2.jsonl") == []
    add_answer(clean_db, "second question", "second answer")
    third = await exporter.export(tenant_id=TENANT, out=tmp_path / "n3.jsonl", days=1, trigger="nightly")
    assert third.rows == 1 and read_jsonl(tmp_path / "n3.jsonl")[0]["messages"][1]["content"] == "second question"
