"""The model a conversation is answered by: the server's default, the base weights, or one adapter version.

Revision ID: 0010_conversation_model
Revises: 0009_grounded_loop
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_conversation_model"
down_revision: str | Sequence[str] | None = "0009_grounded_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: whatever the server serves by default (the active adapter, else the base weights), so every
    # conversation begun before this column follows promotions as it always did. 'base' or an adapter's
    # registry name pins it; a plain name, not a foreign key, because the registry keeps pruned names too.
    op.add_column("conversations", sa.Column("model", sa.Text()))


def downgrade() -> None:
    op.drop_column("conversations", "model")
