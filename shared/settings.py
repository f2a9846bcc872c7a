"""Settings every AION process shares; each service extends this with its own typed class."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Values read from the environment (and `.env`) that every service understands."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), validation_alias="AION_DATA_DIR")
    log_level: str = Field(default="INFO", validation_alias="AION_LOG_LEVEL")
    log_json: bool = Field(default=False, validation_alias="AION_LOG_JSON")
    tenant_id: str = Field(default="default", validation_alias="PRIMARY_TENANT_ID")

    def data_path(self, *parts: str) -> Path:
        """A path under the data dir, created on demand (the dir itself is git-ignored)."""
        path = self.data_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
