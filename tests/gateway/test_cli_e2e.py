"""`aion gateway` on embedded defaults (no DATABASE_URL: it starts Postgres and migrates), then
`aion keys create`, `aion ingest` (files and a web page), `aion search` and `aion db current` against it, and a restart that
keeps the data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.db.migrate import head_revision
from tests.fixtures.servers import REPO, ServiceProcess, base_env, free_port
from tests.fixtures.web_site import run_site

from .conftest import KB_DIR
from .pdfs import build_pdf


def _aion(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aion", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _start_gateway(data_dir: Path, inference_url: str, port: int) -> ServiceProcess:
    # Web pages from the test site on loopback only (allowed by name and by network here, never by default).
    env = base_env(data_dir, AION_LOCAL_LLM_URL=inference_url, AION_URL_ALLOWLIST="127.0.0.1",
                   AION_URL_ALLOW_NETWORKS="127.0.0.1/32", AION_URL_HOST_INTERVAL="0")
    service = ServiceProcess(["gateway", "--port", str(port)], env, data_dir / "logs" / "gateway.log",
                             f"http://127.0.0.1:{port}")
    service.start()
    service.wait_healthy(timeout=180)
    return service


def test_gateway_ingest_and_search_from_the_command_line(pg_tmp_path, inference_url):
    data_dir = pg_tmp_path / "data"
    docs = pg_tmp_path / "docs"
    docs.mkdir()
    for f in KB_DIR.glob("*.md"):
        (docs / f.name).write_bytes(f.read_bytes())
    (docs / "manuals").mkdir()
    (docs / "manuals" / "kettle.pdf").write_bytes(build_pdf([["Intro"], ["The kettle warranty lasts 27 months."]]))
    (docs / "ignored.png").write_bytes(b"\x89PNG not a document")
    port = free_port()
    cli_env = base_env(data_dir, AION_GATEWAY_URL=f"http://127.0.0.1:{port}")

    gateway = _start_gateway(data_dir, inference_url, port)
    try:
        assert (data_dir / "postgres" / "PG_VERSION").exists(), "the gateway started its own Postgres"
        # Auth is on by default: the CLI clients send the key `aion keys create` printed.
        refused = _aion(cli_env, "search", "anything")
        assert refused.returncode == 1 and "aion keys create" in refused.stderr
        created = _aion(cli_env, "keys", "create", "--name", "cli", "--role", "admin")
        assert created.returncode == 0, created.stderr
        cli_env["AION_API_KEY"] = created.stdout.strip()

        ingest = _aion(cli_env, "ingest", str(docs))
        assert ingest.returncode == 0, ingest.stderr
        assert "5 created" in ingest.stdout and "docs/manuals/kettle.pdf" in ingest.stderr
        assert "ignored.png" not in ingest.stderr  # folders contribute only supported files

        again = _aion(cli_env, "ingest", str(docs))
        assert again.returncode == 0 and "5 duplicate" in again.stdout

        refused = _aion(cli_env, "ingest", str(docs / "ignored.png"))
        assert refused.returncode == 1 and "unsupported file type" in refused.stderr

        found = _aion(cli_env, "search", "How long is the kettle warranty?", "--json")
        assert found.returncode == 0, found.stderr
        body = json.loads(found.stdout)
        assert body["passages"][0]["document"] == "docs/manuals/kettle.pdf"
        assert body["passages"][0]["page_or_heading"] == "p. 2"

        pretty = _aion(cli_env, "search", "When are sourdough starters fed?", "-k", "2")
        assert pretty.returncode == 0 and "fed twice a day" in pretty.stdout and pretty.stdout.startswith("C = ")

        with run_site() as site:
            page = _aion(cli_env, "ingest", f"{site.url}/guide.html", "--refresh", "1d")
            assert page.returncode == 0, page.stderr
            assert f"created   {site.url}/guide.html" in page.stderr
            outside = _aion(cli_env, "ingest", site.url.replace("127.0.0.1", "localhost") + "/guide.html")
            assert outside.returncode == 1 and "AION_URL_ALLOWLIST" in outside.stderr
        by_url = json.loads(_aion(cli_env, "search", "visitor moorings fee", "--json").stdout)
        assert by_url["passages"][0]["document"] == f"{site.url}/guide.html"

        current = _aion(cli_env, "db", "current")  # attaches to the same embedded server
        head = head_revision()
        assert current.returncode == 0, current.stderr
        assert f"database at revision {head} (latest {head})" in current.stdout
    finally:
        gateway.stop()

    down = _aion(cli_env, "search", "anything")
    assert down.returncode == 2 and "not reachable" in down.stderr

    gateway = _start_gateway(data_dir, inference_url, port)  # same data dir: the documents are still there
    try:
        again = _aion(cli_env, "search", "Who was the last lighthouse keeper?", "--json")
        assert json.loads(again.stdout)["passages"][0]["document"] == "docs/lighthouse.md"
    finally:
        gateway.stop()
