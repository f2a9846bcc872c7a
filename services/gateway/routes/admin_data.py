"""Read-only data for the admin panel that no other route gives: scheduler state, spend per day."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import SessionDep, StateDep, TenantDep
from ..repositories import ledger, panel

router = APIRouter(prefix="/api/ai/admin", tags=["admin"])

# A job whose next run is this far in the past has not been picked up: no scheduler is running.
OVERDUE_AFTER_S = 300.0


@router.get("/scheduler")
async def scheduler_status(session: SessionDep) -> dict:
    """`scheduled`, `overdue` (jobs stored but nobody runs them) or `not_started`, with recent runs."""
    jobs = await panel.scheduled_jobs(session)
    now = time.time()
    for job in jobs:
        nxt = job["next_run_time"]
        job["next_run_at"] = datetime.fromtimestamp(nxt, UTC).isoformat() if nxt is not None else None
    if not jobs:
        status, hint = "not_started", "no job in the scheduler's store yet; start it with `aion scheduler`"
    elif any(j["next_run_time"] is not None and j["next_run_time"] < now - OVERDUE_AFTER_S for j in jobs):
        status, hint = "overdue", "a job's run time passed without a run; check that `aion scheduler` is running"
    else:
        status, hint = "scheduled", None
    return {"status": status, "hint": hint, "jobs": jobs, "runs": await panel.recent_scheduler_runs(session)}


@router.get("/budget/daily")
async def budget_daily(state: StateDep, session: SessionDep, tenant: TenantDep,
                       days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict:
    """Fallback spend per day (settled, failed and expired calls at their cost; open ones at zero)."""
    since = (datetime.now(UTC) - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = await ledger.spend_by_day(session, tenant, since)
    return {"days": days, "since": since.isoformat(), "cap_usd": state.budget.policy.cap_usd,
            "period": state.budget.policy.period,
            "per_day": [{"day": day, "spent_usd": round(spent, 6), "calls": calls} for day, spent, calls in rows]}
