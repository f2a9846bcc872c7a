"""Response cache (with the knowledge-base version it is keyed by), rate-limit buckets shared by gateway
replicas, the caller of each paid call (per-key budget shares), and identities from an external issuer.

Revision ID: 0008_cache_jwt
Revises: 0006_hybrid_search_eval
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0008_cache_jwt"
down_revision: str | Sequence[str] | None = "0006_hybrid_search_eval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every write to `documents` (upload, replace, delete, a web page fetched or refreshed, by any process)
# bumps its tenant's knowledge version. A constraint trigger deferred to commit: the version row is
# locked for the commit only (concurrent ingests never wait on each other's embedding work), and a
# reader sees the new version exactly when it sees the new chunks.
_BUMP_FUNCTION = """
CREATE FUNCTION aion_bump_knowledge_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tenant text := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    INSERT INTO knowledge_versions (tenant_id, version, updated_at) VALUES (tenant, 1, now())
    ON CONFLICT (tenant_id) DO UPDATE SET version = knowledge_versions.version + 1, updated_at = now();
    RETURN NULL;
END $$
"""
_BUMP_TRIGGER = """
CREATE CONSTRAINT TRIGGER trg_documents_knowledge_version
AFTER INSERT OR UPDATE OR DELETE ON documents
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aion_bump_knowledge_version()
"""


def upgrade() -> None:
    op.create_table(
        "knowledge_versions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        # Bumped by the trigger on documents.
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
        # Bumped when cached answers must go although the documents did not change: an adapter
        # activated, rolled back or merged, or the cache cleared by an admin.
        sa.Column("cache_generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.execute(_BUMP_FUNCTION)
    op.execute(_BUMP_TRIGGER)

    op.create_table(
        "response_cache",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        # sha256 of everything the answer depends on (services/response_cache.py lists it).
        sa.Column("cache_key", sa.String(64), nullable=False),
        # The same without the question: a semantic match must agree on all of it.
        sa.Column("context_key", sa.String(64), nullable=False),
        sa.Column("knowledge_version", sa.BigInteger, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        # The question's embedding, for the semantic cache (NULL when it is off).
        sa.Column("embedding", Vector(384)),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("used", sa.String(16), nullable=False),
        sa.Column("model", sa.Text),
        # What the answer cost when it was made: what every hit saves.
        sa.Column("cost_usd", sa.Double, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "cache_key", name="uq_response_cache_tenant_key"),
    )
    op.create_index("ix_response_cache_tenant_context", "response_cache", ["tenant_id", "context_key"])
    op.create_index("ix_response_cache_expires", "response_cache", ["expires_at"])

    op.create_table(
        "rate_buckets",
        # "<bucket kind>:<caller>", e.g. chat:key:<uuid>
        sa.Column("bucket_key", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )

    # Who made each paid call ("key:<uuid>"), for the per-key share of the budget.
    op.add_column("fallback_ledger", sa.Column("caller", sa.String(200)))
    op.create_index("ix_fallback_ledger_tenant_period_caller", "fallback_ledger",
                    ["tenant_id", "period_start", "caller"])

    # A person signed in by an external identity provider gets a key row of their own (never a usable
    # key): rate limits, budget shares and conversations work as for keys, and revoking it bans them.
    op.add_column("api_keys", sa.Column("external_subject", sa.Text))
    op.create_unique_constraint("uq_api_keys_external_subject", "api_keys", ["external_subject"])


def downgrade() -> None:
    op.drop_constraint("uq_api_keys_external_subject", "api_keys", type_="unique")
    op.drop_column("api_keys", "external_subject")
    op.drop_index("ix_fallback_ledger_tenant_period_caller", table_name="fallback_ledger")
    op.drop_column("fallback_ledger", "caller")
    op.drop_table("rate_buckets")
    op.drop_index("ix_response_cache_expires", table_name="response_cache")
    op.drop_index("ix_response_cache_tenant_context", table_name="response_cache")
    op.drop_table("response_cache")
    op.execute("DROP TRIGGER trg_documents_knowledge_version ON documents")
    op.execute("DROP FUNCTION aion_bump_knowledge_version()")
    op.drop_table("knowledge_versions")
