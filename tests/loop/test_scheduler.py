"""The nightly job under real `aion scheduler` processes: it fires, two schedulers never run one slot
twice, and a run missed while the process was down is caught up exactly once."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.servers import REPO, base_env
from tests.loop.conftest import TENANT, add_answer

pytestmark = pytest.mark.slow


def start_scheduler(db: str, tmp: Path, cron: str, name: str, **extra: str) -> subprocess.Popen:
    env = base_env(tmp / "data", DATABASE_URL=db, AION_EXPORT_CRON=cron, AION_TRAIN_ROOT=str(tmp / "train"),
                   PRIMARY_TENANT_ID=TENANT, AION_TRAIN_MIN_EXAMPLES="2", **extra)
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "aion", "scheduler"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def query(db: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def test_two_schedulers_share_the_store_and_never_run_a_slot_twice(clean_db, tmp_path) -> None:
    add_answer(clean_db, "Quando abre o farol?", "Às nove.")
    add_answer(clean_db, "Quantos segundos entre flashes?", "Sete.")
    cron = "*/3 * * * * *"  # every 3 seconds (6-field form)
    a = start_scheduler(clean_db, tmp_path, cron, "a")
    b = start_scheduler(clean_db, tmp_path, cron, "b")
    try:
        wait_for(lambda: len(query(clean_db, "SELECT 1 FROM scheduler_runs WHERE status <> 'running'")) >= 3)
        assert a.poll() is None and b.poll() is None
    finally:
        stop(a)
        stop(b)
    slots = query(clean_db, "SELECT slot, owner, status FROM scheduler_runs ORDER BY slot")
    assert len({s for s, _, _ in slots}) == len(slots)  # the primary key says it too; one row per slot
    assert {st for _, _, st in slots} <= {"succeeded", "running"}
    nightly = query(clean_db, "SELECT rows FROM export_runs WHERE trigger = 'nightly' ORDER BY created_at")
    assert len(nightly) == len([s for s in slots if s[2] == "succeeded"])
    # Nothing trained on them yet (the job is only queued): every night's dataset carries both rows.
    assert all(r[0] == 2 for r in nightly)
    jobs = query(clean_db, "SELECT status, trigger, dataset_path FROM training_jobs")
    assert len(jobs) == 1 and jobs[0][:2] == ("queued", "nightly") and Path(jobs[0][2]).is_file()


def test_a_missed_run_is_caught_up_once(clean_db, tmp_path) -> None:
    add_answer(clean_db, "Pergunta", "Resposta")
    daily = "5 0 * * *"
    first = start_scheduler(clean_db, tmp_path, daily, "first")
    try:
        wait_for(lambda: query(clean_db, "SELECT 1 FROM apscheduler_jobs WHERE id = 'nightly_export'"))
    finally:
        stop(first)
    assert query(clean_db, "SELECT count(*) FROM scheduler_runs") == [(0,)]
    # The process was "down" for two days: the stored next run lies in the past.
    missed = datetime.now(UTC) - timedelta(days=2)
    (state,) = query(clean_db, "SELECT job_state FROM apscheduler_jobs WHERE id = 'nightly_export'")[0]
    job = pickle.loads(state)
    job["next_run_time"] = missed
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("UPDATE apscheduler_jobs SET job_state = %s, next_run_time = %s WHERE id = 'nightly_export'",
                     (pickle.dumps(job, pickle.HIGHEST_PROTOCOL), missed.timestamp()))
    back = start_scheduler(clean_db, tmp_path, daily, "back")
    try:
        wait_for(lambda: query(clean_db, "SELECT 1 FROM scheduler_runs WHERE status = 'succeeded'"))
        time.sleep(3)  # a second (duplicate) catch-up run would show up here
    finally:
        stop(back)
    runs = query(clean_db, "SELECT slot FROM scheduler_runs")
    assert len(runs) == 1
    slot = runs[0][0]
    assert slot.hour == 0 and slot.minute == 5 and slot <= datetime.now(UTC)
    (next_run,) = query(clean_db, "SELECT next_run_time FROM apscheduler_jobs WHERE id = 'nightly_export'")[0]
    assert next_run > time.time()
