"""Typed settings of the scheduler (nightly export and the retrain trigger)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from services.gateway.services.prompt import DEFAULT_RAG_SYSTEM_PROMPT
from shared.db import DatabaseSettings


class SchedulerSettings(DatabaseSettings):
    export_cron: str = Field(default="5 0 * * *", validation_alias="AION_EXPORT_CRON")
    timezone: str = Field(default="UTC", validation_alias="AION_SCHEDULER_TIMEZONE")
    export_days: int = Field(default=1, ge=1, le=3650, validation_alias="AION_EXPORT_DAYS")
    train_min_examples: int = Field(default=20, ge=1, validation_alias="AION_TRAIN_MIN_EXAMPLES")
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")
    # The gateway answers with this prompt; exported training rows carry the same one.
    system_prompt: str = Field(default=DEFAULT_RAG_SYSTEM_PROMPT, validation_alias="AION_RAG_SYSTEM_PROMPT")

    # How often to look for web pages whose refresh cadence is due (0: never re-fetch them).
    web_refresh_minutes: int = Field(default=15, ge=0, le=10080, validation_alias="AION_WEB_REFRESH_MINUTES")

    def exports_dir(self) -> Path:
        return (self.train_root or self.data_dir / "trainer") / "exports"


@lru_cache
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()
