"""Chat and learning loop: fallback ledger, export runs, training jobs, adapter registry, scheduler store.

Revision ID: 0002_chat_and_learning_loop
Revises: 0001_knowledge_base
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_chat_and_learning_loop"
down_revision: str | Sequence[str] | None = "0001_knowledge_base"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.sql.elements.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "fallback_ledger",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reserved_usd", sa.Double(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Double(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('reserved', 'settled', 'failed', 'expired')", name="status"),
    )
    op.create_index("ix_fallback_ledger_tenant_period", "fallback_ledger", ["tenant_id", "period_start", "status"])

    op.create_table(
        "export_runs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True)),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("path", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("status IN ('succeeded', 'failed')", name="status"),
    )
    op.create_index("ix_export_runs_tenant_created", "export_runs", ["tenant_id", "created_at"])

    op.create_table(
        "training_jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("trigger", sa.String(16), nullable=False, server_default="manual"),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("dataset_path", sa.Text()),
        sa.Column("progress", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("metrics", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("log_tail", sa.Text(), nullable=False, server_default=""),
        sa.Column("error", sa.Text()),
        sa.Column("adapter_name", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker", sa.Text()),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'rejected', 'cancelled')",
                           name="status"),
    )
    op.create_index("ix_training_jobs_status_created", "training_jobs", ["status", "created_at"])
    op.create_index("ix_training_jobs_tenant_created", "training_jobs", ["tenant_id", "created_at"])

    op.create_table(
        "adapters",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False, server_default="candidate"),
        sa.Column("metrics", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("promoted_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("tenant_id", "name", name="uq_adapters_tenant_name"),
        sa.CheckConstraint("status IN ('candidate', 'active', 'retired', 'rejected')", name="status"),
    )
    # At most one active adapter per tenant, enforced by the database.
    op.create_index("uq_adapters_one_active", "adapters", ["tenant_id"], unique=True,
                    postgresql_where=sa.text("status = 'active'"))

    # One row per scheduled slot of a job: whoever inserts it runs it, so two schedulers never both do.
    op.create_table(
        "scheduler_runs",
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="running"),
        sa.Column("detail", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("job", "slot", name="pk_scheduler_runs"),
    )

    # APScheduler's SQLAlchemyJobStore table, created here so schema changes stay in migrations.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Double(), index=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("apscheduler_jobs")
    op.drop_table("scheduler_runs")
    op.drop_index("uq_adapters_one_active", table_name="adapters")
    op.drop_table("adapters")
    op.drop_index("ix_training_jobs_tenant_created", table_name="training_jobs")
    op.drop_index("ix_training_jobs_status_created", table_name="training_jobs")
    op.drop_table("training_jobs")
    op.drop_index("ix_export_runs_tenant_created", table_name="export_runs")
    op.drop_table("export_runs")
    op.drop_index("ix_fallback_ledger_tenant_period", table_name="fallback_ledger")
    op.drop_table("fallback_ledger")
