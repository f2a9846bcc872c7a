"""Settings of `aion trainer worker`: where jobs come from, where adapters go, how to reach inference."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.gateway.export_settings import ExportPolicySettings
from shared.db import DatabaseSettings


class WorkerSettings(DatabaseSettings, ExportPolicySettings):
    local_llm_url: str = Field(default="http://127.0.0.1:8008", validation_alias="AION_LOCAL_LLM_URL")
    inference_token: str | None = Field(default=None, validation_alias="AION_INFERENCE_TOKEN")
    # How a promoted adapter reaches the server at AION_LOCAL_LLM_URL (the gateway's setting of the same name).
    inference_backend: Literal["aion", "vllm"] = Field(default="aion", validation_alias="AION_INFERENCE_BACKEND")
    train_root: Path | None = Field(default=None, validation_alias="AION_TRAIN_ROOT")
    adapter_dir: Path | None = Field(default=None, validation_alias="AION_ADAPTER_DIR")
    poll_s: float = Field(default=5.0, gt=0, validation_alias="AION_TRAIN_POLL_SECONDS")
    heartbeat_s: float = Field(default=10.0, gt=0, validation_alias="AION_TRAIN_HEARTBEAT_SECONDS")
    # A running job whose worker has not beaten for this long is taken as dead: re-queued once, then failed.
    stale_after_s: float = Field(default=120.0, gt=0, validation_alias="AION_TRAIN_STALE_SECONDS")
    max_attempts: int = Field(default=2, ge=1, le=10, validation_alias="AION_TRAIN_MAX_ATTEMPTS")
    # Adapter folders kept on disk after a promotion: the newest N, plus the active one and its rollback
    # target; older ones are deleted (their registry rows stay, marked `pruned_at`).
    adapter_keep: int = Field(default=5, ge=1, le=1000, validation_alias="AION_ADAPTER_KEEP")

    def root(self) -> Path:
        return (self.train_root or self.data_dir / "trainer").expanduser()

    def adapters_root(self) -> Path:
        return self.root() / "adapters"

    def active_adapter_link(self) -> Path:
        """AION_ADAPTER_DIR: a symlink to the active adapter, so a restarted inference serves it."""
        return (self.adapter_dir or self.adapters_root() / "active").expanduser()
