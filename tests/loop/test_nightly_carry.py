"""The nightly dataset is everything the active adapter was not trained on: a night below
AION_TRAIN_MIN_EXAMPLES carries its rows to the next, and a rollback brings them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from services.gateway.repositories import adapters as adapters_repo
from services.gateway.repositories import jobs as jobs_repo
from services.scheduler.jobs import nightly_export
from services.scheduler.settings import SchedulerSettings
from tests.loop.conftest import TENANT, add_answer, read_jsonl

SLOT = datetime(2031, 3, 1, 0, 5, tzinfo=UTC)


def questions(path: str) -> set[str]:
    return {row["meta"]["question"] for row in read_jsonl(Path(path))}


async def test_a_small_night_carries_its_rows_to_the_next_job(sessions, clean_db, tmp_path) -> None:
    settings = SchedulerSettings(DATABASE_URL=clean_db, PRIMARY_TENANT_ID=TENANT, AION_TRAIN_ROOT=str(tmp_path),
                                 AION_TRAIN_MIN_EXAMPLES=3)
    add_answer(clean_db, "night 1 a", "r1a [1]")
    add_answer(clean_db, "night 1 b", "r1b [1]")
    first = await nightly_export(sessions, settings, SLOT)
    assert first["rows"] == 2 and "skipped: 2 new examples" in first["training_job"]

    add_answer(clean_db, "night 2 a", "r2a [1]")
    add_answer(clean_db, "night 2 b", "r2b [1]")
    second = await nightly_export(sessions, settings, SLOT + timedelta(days=1))
    assert second["rows"] == 4  # the first night's rows were not trained on: they come again
    async with sessions() as session:
        job = await jobs_repo.active_job(session, TENANT)
    assert str(job["id"]) == second["training_job"] and job["dataset_path"] == second["path"]
    assert questions(job["dataset_path"]) == {"night 1 a", "night 1 b", "night 2 a", "night 2 b"}
    assert job["data_until"] is not None

    # That job trains and its adapter is promoted: its rows are in the serving adapter now.
    async with sessions.begin() as session:
        await session.execute(text("UPDATE training_jobs SET status = 'succeeded' WHERE id = :id"), {"id": job["id"]})
        await adapters_repo.register(session, tenant_id=TENANT, name="aion-v1", path=str(tmp_path / "v1"),
                                     base_model="smollm2", sha256=None, status="candidate", metrics={},
                                     job_id=job["id"])
        await adapters_repo.make_active(session, TENANT, "aion-v1")
    add_answer(clean_db, "night 3 a", "r3a [1]")
    third = await nightly_export(sessions, settings, SLOT + timedelta(days=2))
    assert third["rows"] == 1 and questions(third["path"]) == {"night 3 a"}

    # A rollback to the base weights: nothing serving holds those rows any more.
    async with sessions.begin() as session:
        await adapters_repo.deactivate_all(session, TENANT)
    fourth = await nightly_export(sessions, settings, SLOT + timedelta(days=3))
    assert fourth["rows"] == 5


async def test_the_carry_reaches_back_at_most_export_days(sessions, clean_db, tmp_path) -> None:
    settings = SchedulerSettings(DATABASE_URL=clean_db, PRIMARY_TENANT_ID=TENANT, AION_TRAIN_ROOT=str(tmp_path),
                                 AION_TRAIN_MIN_EXAMPLES=100, AION_EXPORT_DAYS=3)
    now = datetime.now(UTC)
    add_answer(clean_db, "too old", "r [1]", when=now - timedelta(days=5))
    add_answer(clean_db, "recent", "r [1]", when=now - timedelta(days=2))
    done = await nightly_export(sessions, settings, SLOT)
    assert done["rows"] == 1 and questions(done["path"]) == {"recent"}
