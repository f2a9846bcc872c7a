"""The embedded Postgres: several processes starting it at once share one server; data survives restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import psycopg
    from shared.db.embedded import ensure_embedded_postgres
    url = ensure_embedded_postgres(Path(sys.argv[1]))
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        server = conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()[0]
        conn.execute("SELECT pg_advisory_xact_lock(42)")  # CREATE TABLE IF NOT EXISTS races otherwise
        conn.execute("CREATE TABLE IF NOT EXISTS marks (who text)")
        conn.execute("INSERT INTO marks VALUES (%s)", (sys.argv[2],))
        conn.commit()
        time.sleep(float(sys.argv[3]))
    print(json.dumps({"url": url, "server": server}))
""")


def _spawn(pgdata: Path, who: str, hold: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(pgdata), who, str(hold)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _postmaster_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    return pidfile.exists() and psutil.pid_exists(int(pidfile.read_text().split()[0]))


def test_concurrent_starts_share_one_server_and_data_persists(pg_tmp_path):
    pgdata = pg_tmp_path / "postgres"
    procs = [_spawn(pgdata, f"p{i}", 1.5) for i in range(3)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert len({o["url"] for o in outputs}) == 1
    assert len({o["server"] for o in outputs}) == 1
    # The last process to let go stops the server; nothing is left running.
    assert not _postmaster_running(pgdata)
    # The lock and handle files stay beside the cluster, not in a user-wide runtime folder.
    assert (pg_tmp_path / ".postgres-run" / "aion.lock").exists()

    # A later start finds the same data.
    again = _spawn(pgdata, "later", 0)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    import psycopg

    from shared.db.embedded import ensure_embedded_postgres
    url = ensure_embedded_postgres(pgdata)
    try:
        with psycopg.connect(url) as conn:
            marks = sorted(r[0] for r in conn.execute("SELECT who FROM marks"))
        assert marks == ["later", "p0", "p1", "p2"]
    finally:
        from shared.db.embedded import stop_embedded_postgres
        stop_embedded_postgres(pgdata)
    assert not _postmaster_running(pgdata)


def test_a_killed_holder_does_not_keep_the_server_alive_forever(pg_tmp_path):
    pgdata = pg_tmp_path / "postgres"
    holder = _spawn(pgdata, "holder", 60)
    # Wait until it is connected, then kill it without letting its exit hook run.
    import time

    from shared.db.embedded import ensure_embedded_postgres, stop_embedded_postgres
    deadline = time.monotonic() + 60
    while not _postmaster_running(pgdata):
        assert time.monotonic() < deadline, "embedded postgres did not start"
        time.sleep(0.2)
    time.sleep(1.0)
    holder.kill()
    holder.wait()
    ensure_embedded_postgres(pgdata)  # prunes the dead holder from the handle list
    handles = json.loads((pgdata / ".handle_pids.json").read_text())
    assert holder.pid not in handles
    stop_embedded_postgres(pgdata)
    assert not _postmaster_running(pgdata)


def test_a_gateway_stopped_by_sigterm_stops_the_server_it_started(pg_tmp_path):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so exit hooks never run: the gateway's
    own shutdown must let go of the embedded server, or a Postgres outlives every AION process."""
    import signal
    import time

    from tests.fixtures.servers import ServiceProcess, base_env, free_port

    port = free_port()
    env = base_env(pg_tmp_path / "data", AION_GATEWAY_PORT=str(port), AION_AUTH="off",
                   AION_LOCAL_LLM_URL="http://127.0.0.1:9")
    gateway = ServiceProcess(["gateway"], env, pg_tmp_path / "gateway.log", f"http://127.0.0.1:{port}")
    pgdata = pg_tmp_path / "data" / "postgres"
    gateway.start()
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:  # up: /health answers (503 here: no inference service runs)
            assert gateway.proc.poll() is None and time.monotonic() < deadline, gateway.log_tail()
            try:
                if httpx.get(f"{gateway.url}/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert _postmaster_running(pgdata)
        gateway.stop(signal.SIGTERM)
        assert gateway.proc.returncode in (0, -signal.SIGTERM), gateway.log_tail()
    finally:
        gateway.kill()
    deadline = time.monotonic() + 15
    while _postmaster_running(pgdata):
        assert time.monotonic() < deadline, f"postgres still running after the gateway stopped:\n{gateway.log_tail()}"
        time.sleep(0.2)
