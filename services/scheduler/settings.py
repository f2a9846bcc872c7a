"""Typed settings of the scheduler (nightly export and the retrain trigger)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from services.gateway.export_settings import ExportPolicySettings
from shared.db import DatabaseSettings


class SchedulerSettings(DatabaseSettings, ExportPolicySettings):
    export_cron: str = Field(default="5 0 * * *", validation_alias="AION_EXPORT_CRON")
    timezone: str = Field(default="UTC", validation_alias="AION_SCHEDULER_TIMEZONE")
    # A night's dataset is every answer the active adapter was not trained on, reaching back at most this
    # many days: nights with too few rows carry them to the next, up to this age.
    export_days: int = Field(default=30, ge=1, le=3650, validation_alias="AION_EXPORT_DAYS")
    train_min_examples: int = Field(default=20, ge=1, validation_alias="AION_TRAIN_MIN_EXAMPLES")
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")

    # How often to look for web pages whose refresh cadence is due (0: never re-fetch them).
    web_refresh_minutes: int = Field(default=15, ge=0, le=10080, validation_alias="AION_WEB_REFRESH_MINUTES")

    def exports_dir(self) -> Path:
        return (self.train_root or self.data_dir / "trainer") / "exports"


@lru_cache
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()
