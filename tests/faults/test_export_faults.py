"""A full disk or an unwritable export path: a clear error, and the previous export left as it was.

Both ways out are covered: the gateway writing AION_EVENTS_JSONL (POST /api/ai/metrics/export.jsonl)
and `aion export --out FILE` writing on the caller's machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
from psycopg.types.json import Jsonb

from services.gateway.main import create_app
from services.gateway.services.answer_record import model_input
from tests.faults.conftest import fill_up, remount_read_only, small_filesystem
from tests.fixtures.servers import REPO, run_asgi
from tests.gateway.conftest import gateway_settings
from tests.loop.conftest import rag_messages

TENANT = "test-tenant"


def seed_answers(db: str, n: int, reply_chars: int = 300) -> None:
    with psycopg.connect(db) as conn:
        for i in range(n):
            # As the answer path logs a fallback answer (teacher data: exported), with its model input.
            meta = {"prompt": f"question {i}?", "reply": f"answer {i} " + "x" * reply_chars, "used": "fallback",
                    "complete": True, **model_input(rag_messages(f"question {i}?"), 64_000)}
            conn.execute("INSERT INTO ai_events (tenant_id, kind, value, meta, request_id) "
                         "VALUES (%s, 'answer', 1.0, %s, %s)", (TENANT, Jsonb(meta), f"req-{i}"))


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write could leave beside the export."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def export_via_api(url: str) -> httpx.Response:
    return httpx.post(f"{url}/api/ai/metrics/export.jsonl", json={"days": 1}, timeout=60)


def export_via_cli(url: str, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AION_")}
    return subprocess.run([sys.executable, "-m", "aion", "export", "--url", url, "--days", "1", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_full_disk_keeps_the_previous_export(clean_db, inference_url) -> None:
    seed_answers(clean_db, 3)
    with small_filesystem("256k") as disk:
        out = disk / "events.jsonl"
        with run_asgi(create_app(gateway_settings(clean_db, inference_url, AION_EVENTS_JSONL=str(out)))) as url:
            first = export_via_api(url)
            assert first.status_code == 200 and first.json()["rows"] == 3, first.text
            previous = out.read_bytes()
            assert export_via_cli(url, disk / "cli.jsonl").returncode == 0
            cli_previous = (disk / "cli.jsonl").read_bytes()

            seed_answers(clean_db, 200)  # the next export is ~250 kB: more than the disk has left
            fill_up(disk)
            r = export_via_api(url)
            cli = export_via_cli(url, disk / "cli.jsonl")

            runs = httpx.get(f"{url}/api/ai/metrics/exports", timeout=30).json()["runs"]
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "export_failed"
        assert str(out) in error["message"] and "No space left on device" in error["message"]
        assert out.read_bytes() == previous and len(previous.splitlines()) == 3
        assert cli.returncode == 1 and "No space left on device" in cli.stderr and "previous file is intact" in cli.stderr
        assert (disk / "cli.jsonl").read_bytes() == cli_previous
        assert leftovers(disk) == []
        # The failed run is on record, so the nightly watermark does not move past rows never written.
        server_side = [run for run in runs if run["path"] == str(out)]
        assert [run["status"] for run in server_side] == ["failed", "succeeded"]
        assert "No space left" in server_side[0]["error"]


def test_read_only_export_folder_keeps_the_previous_export(clean_db, inference_url) -> None:
    seed_answers(clean_db, 2)
    with small_filesystem("1m") as disk:
        out = disk / "events.jsonl"
        with run_asgi(create_app(gateway_settings(clean_db, inference_url, AION_EVENTS_JSONL=str(out)))) as url:
            assert export_via_api(url).status_code == 200
            assert export_via_cli(url, disk / "cli.jsonl").returncode == 0
            previous, cli_previous = out.read_bytes(), (disk / "cli.jsonl").read_bytes()
            seed_answers(clean_db, 1)
            remount_read_only(disk)
            r = export_via_api(url)
            cli = export_via_cli(url, disk / "cli.jsonl")
        assert r.status_code == 503 and "Read-only file system" in r.json()["error"]["message"], r.text
        assert cli.returncode == 1 and "Read-only file system" in cli.stderr
        assert out.read_bytes() == previous and (disk / "cli.jsonl").read_bytes() == cli_previous
        assert [json.loads(line)["meta"]["request_id"] for line in previous.splitlines()] == ["req-0", "req-1"]


def test_export_path_under_a_file_is_a_clear_error(clean_db, inference_url, tmp_path) -> None:
    """Runs anywhere (no mount): the configured folder is a regular file."""
    seed_answers(clean_db, 1)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be\n")
    out = blocker / "events.jsonl"
    with run_asgi(create_app(gateway_settings(clean_db, inference_url, AION_EVENTS_JSONL=str(out)))) as url:
        r = export_via_api(url)
        cli = export_via_cli(url, out)
    assert r.status_code == 503, r.text
    message = r.json()["error"]["message"]
    assert str(out) in message and ("Not a directory" in message or "File exists" in message)
    assert cli.returncode == 1 and str(out) in cli.stderr
    assert blocker.read_text() == "a file where the export folder should be\n"

