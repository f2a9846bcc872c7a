"""The training-data selection policy, read alike by every process that exports (gateway, scheduler, trainer)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings

from .services.selection import LocalPolicy, SelectionPolicy


class ExportPolicySettings(CommonSettings):
    # Fallback answers are teacher data.
    export_fallback: bool = Field(default=True, validation_alias="AION_EXPORT_FALLBACK")
    # The local model's own answers: only with a thumbs-up (thumbs_up), all of them, or never.
    export_local: LocalPolicy = Field(default="thumbs_up", validation_alias="AION_EXPORT_LOCAL")
    # Answers whose recorded `support` (share of the reply backed by its passages) is below this are left out.
    export_min_support: float = Field(default=0.5, ge=0.0, le=1.0, validation_alias="AION_EXPORT_MIN_SUPPORT")

    def selection_policy(self) -> SelectionPolicy:
        return SelectionPolicy(fallback=self.export_fallback, local=self.export_local,
                               min_support=self.export_min_support)
