"""Generated images (files under the data dir, metadata here) and web pages kept as documents.

Revision ID: 0005_images_web
Revises: 0004_conversations
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_images_web"
down_revision: str | Sequence[str] | None = "0004_conversations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        # The PNG's file name under <AION_DATA_DIR>/images/<tenant>/; never a path from a request.
        sa.Column("file_name", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("negative_prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("num_inference_steps", sa.Integer, nullable=False),
        sa.Column("guidance_scale", sa.Double, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("ms", sa.Integer, nullable=False),
        # Who asked: the API key's name (the local developer with AION_AUTH=off) and its id.
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("key_id", postgresql.UUID(as_uuid=True)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("meta", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("tenant_id", "file_name", name="uq_images_tenant_file_name"),
    )
    op.create_index("ix_images_tenant_created", "images", ["tenant_id", "created_at"])

    op.create_table(
        "web_pages",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        # The page's document (its source_name is the URL); deleting the document forgets the page.
        sa.Column("document_id", postgresql.UUID(as_uuid=True),
                  sa.ForeignKey("documents.id", ondelete="CASCADE")),
        # Seconds between re-fetches; NULL: fetched once, never refreshed.
        sa.Column("refresh_seconds", sa.Integer),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("content_sha256", sa.String(64)),
        sa.Column("last_status", sa.String(32), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("fetched_at", sa.DateTime(timezone=True)),
        sa.Column("next_fetch_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("tenant_id", "url", name="uq_web_pages_tenant_url"),
    )
    # The refresh job's question: which pages are due.
    op.create_index("ix_web_pages_due", "web_pages", ["next_fetch_at"],
                    postgresql_where=sa.text("next_fetch_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_web_pages_due", table_name="web_pages")
    op.drop_table("web_pages")
    op.drop_index("ix_images_tenant_created", table_name="images")
    op.drop_table("images")
