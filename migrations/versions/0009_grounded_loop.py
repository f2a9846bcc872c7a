"""Grounded learning loop: a training job's data window, and when an adapter stopped serving or lost its files.

Revision ID: 0009_grounded_loop
Revises: 0008_cache_jwt
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_grounded_loop"
down_revision: str | Sequence[str] | None = "0008_cache_jwt"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The end of the export window a job trained on: the next night's dataset starts there once that
    # job's adapter is active, so rows a night could not use are carried, never dropped.
    op.add_column("training_jobs", sa.Column("data_until", sa.DateTime(timezone=True)))
    # When an adapter stopped being the active one (its serving period, for its after-promotion figures).
    op.add_column("adapters", sa.Column("retired_at", sa.DateTime(timezone=True)))
    # When retention deleted its folder (AION_ADAPTER_KEEP); the registry row and its figures stay.
    op.add_column("adapters", sa.Column("pruned_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("adapters", "pruned_at")
    op.drop_column("adapters", "retired_at")
    op.drop_column("training_jobs", "data_until")
