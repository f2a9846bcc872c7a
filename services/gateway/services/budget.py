"""The fallback budget: a USD cap per period and a cap on the share of answers that may use the fallback.

A call reserves its maximum possible cost before it starts and settles to the real cost after; the
decision runs under a per-tenant Postgres advisory lock, so concurrent requests can never spend past
the cap. A free local answer never depends on any of this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..repositories import ledger
from .pricing import Price

DenialReason = Literal["budget_exhausted", "fallback_share_cap", "fallback_disabled", "key_budget_share"]


@dataclass(frozen=True)
class Reservation:
    entry_id: uuid.UUID
    model: str
    reserved_usd: float
    price: Price


@dataclass(frozen=True)
class Denial:
    reason: DenialReason
    message: str


@dataclass(frozen=True)
class BudgetPolicy:
    cap_usd: float
    period: Literal["month", "day"]
    max_fallback_share: float       # AION_TAU_FALLBACK
    share_min_answers: int          # the share cap applies once the period has this many answers
    stale_reservation_s: float
    key_share: float = 1.0          # AION_BUDGET_KEY_SHARE: the most of the cap one caller may spend


def period_start(period: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class BudgetGuard:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], policy: BudgetPolicy) -> None:
        self.session_factory = session_factory
        self.policy = policy

    async def reserve(self, *, tenant_id: str, request_id: str, model: str, price: Price, prompt_tokens: int,
                max_completion_tokens: int, caller: str | None = None) -> Reservation | Denial:
        worst_case = price.cost(prompt_tokens, max_completion_tokens)
        start = period_start(self.policy.period)
        async with self.session_factory.begin() as session:
            await ledger.lock_tenant_budget(session, tenant_id)
            await ledger.expire_stale(session, tenant_id, self.policy.stale_reservation_s)
            totals = await ledger.period_totals(session, tenant_id, start)
            committed = totals.spent_usd + totals.reserved_usd
            if committed + worst_case > self.policy.cap_usd:
                return Denial("budget_exhausted",
                              f"the fallback budget of ${self.policy.cap_usd:.2f} per {self.policy.period} is spent "
                              f"(${committed:.4f} used or reserved; this call could cost ${worst_case:.4f})")
            if caller is not None and self.policy.key_share < 1.0:
                # Under the same lock, from the same ledger: every replica sees every key's spending.
                mine = await ledger.caller_committed(session, tenant_id, start, caller)
                allowed = self.policy.key_share * self.policy.cap_usd
                if mine + worst_case > allowed:
                    return Denial("key_budget_share",
                                  f"this key's share of the fallback budget is spent (${mine:.4f} of "
                                  f"${allowed:.4f} this {self.policy.period}: {self.policy.key_share:.0%} of the cap, "
                                  f"AION_BUDGET_KEY_SHARE); this call could cost ${worst_case:.4f}")
            answers = await ledger.answers_in_period(session, tenant_id, start)
            if answers >= self.policy.share_min_answers:
                share = (totals.fallback_calls + 1) / (answers + 1)
                if share > self.policy.max_fallback_share:
                    return Denial("fallback_share_cap",
                                  f"{totals.fallback_calls} of {answers} answers this {self.policy.period} used the "
                                  f"fallback; the cap is {self.policy.max_fallback_share:.0%} (AION_TAU_FALLBACK)")
            entry = await ledger.insert_reservation(session, tenant_id=tenant_id, request_id=request_id, model=model,
                                              period_start=start, reserved_usd=worst_case, caller=caller)
        return Reservation(entry_id=entry, model=model, reserved_usd=worst_case, price=price)

    async def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int,
               usage_estimated: bool, failed: bool = False, error: str | None = None) -> float:
        """Replace the reservation by the real cost; a call that produced nothing costs nothing."""
        cost = reservation.price.cost(prompt_tokens, completion_tokens)
        async with self.session_factory.begin() as session:
            await ledger.settle(session, reservation.entry_id, status="failed" if failed else "settled", cost_usd=cost,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          usage_estimated=usage_estimated, error=error)
        return cost

    async def status(self, tenant_id: str) -> dict:
        start = period_start(self.policy.period)
        async with self.session_factory() as session:
            totals = await ledger.period_totals(session, tenant_id, start)
            answers = await ledger.answers_in_period(session, tenant_id, start)
        remaining = max(0.0, self.policy.cap_usd - totals.spent_usd - totals.reserved_usd)
        return {"cap_usd": self.policy.cap_usd, "spent_usd": round(totals.spent_usd, 6),
                "reserved_usd": round(totals.reserved_usd, 6), "remaining_usd": round(remaining, 6),
                "period": self.policy.period, "period_start": start.isoformat(),
                "fallback_calls": totals.fallback_calls, "answers": answers,
                "fallback_share": round(totals.fallback_calls / answers, 4) if answers else 0.0,
                "max_fallback_share": self.policy.max_fallback_share, "key_share": self.policy.key_share}
