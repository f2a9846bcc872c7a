"""Hybrid retrieval and evaluation runs: a full-text column on chunks (GIN), and the `eval_runs` table.

The text-search configuration `aion_text` serves Portuguese and English documents alike: the default
parser, Portuguese then English stop words dropped, accents folded (unaccent), no stemming. The text
arm is there for exact tokens (operator and function names, option flags, codes) that the embedding
misses; paraphrase is the vector arm's job. Why this configuration: docs/benchmarks.md.

Revision ID: 0006_hybrid_search_eval
Revises: 0005_images_web
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_hybrid_search_eval"
down_revision: str | Sequence[str] | None = "0005_images_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: the chunks' generated column and the repository's queries name this configuration.
TEXT_CONFIG = "aion_text"
WORD_TOKENS = "asciiword, asciihword, hword_asciipart, word, hword, hword_part"


def upgrade() -> None:
    # unaccent is a trusted extension (PostgreSQL 13+): the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    # A word meets the Portuguese stop list before and after its accents are folded (the list has "não"
    # but "e", not "é"); ACCEPT = false passes every other word on. The English dictionary then drops
    # English stop words and keeps the rest, lower-cased.
    op.execute("CREATE TEXT SEARCH DICTIONARY aion_pt_stop (TEMPLATE = pg_catalog.simple, "
               "STOPWORDS = portuguese, ACCEPT = false)")
    op.execute("CREATE TEXT SEARCH DICTIONARY aion_en_stop (TEMPLATE = pg_catalog.simple, STOPWORDS = english)")
    op.execute(f"CREATE TEXT SEARCH CONFIGURATION {TEXT_CONFIG} (COPY = pg_catalog.simple)")
    op.execute(f"ALTER TEXT SEARCH CONFIGURATION {TEXT_CONFIG} ALTER MAPPING FOR {WORD_TOKENS} "
               "WITH aion_pt_stop, unaccent, aion_pt_stop, aion_en_stop")
    # Generated and stored: every existing chunk gets its vector now (the backfill), every new one on insert.
    op.execute(f"""
        ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS
            (to_tsvector('{TEXT_CONFIG}'::regconfig, coalesce(heading, '') || ' ' || text)) STORED
    """)
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], postgresql_using="gin")
    op.execute("ANALYZE chunks")  # the text arm reads the lexeme statistics (pg_stats) to skip common words

    op.create_table(
        "eval_runs",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("set_sha256", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("questions", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text()),
        sa.Column("settings", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("metrics", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("results", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("duration_s", sa.Double(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("mode IN ('answer', 'retrieval')", name="mode"),
    )
    op.create_index("ix_eval_runs_tenant_created", "eval_runs", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_eval_runs_tenant_created", table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_index("ix_chunks_tsv", table_name="chunks")
    op.drop_column("chunks", "tsv")
    op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {TEXT_CONFIG}")
    op.execute("DROP TEXT SEARCH DICTIONARY IF EXISTS aion_en_stop")
    op.execute("DROP TEXT SEARCH DICTIONARY IF EXISTS aion_pt_stop")
    # Like the vector extension in 0001: kept when something else uses it.
    op.execute("""
        DO $$
        BEGIN
            DROP EXTENSION IF EXISTS unaccent;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'unaccent extension kept: other objects still use it';
        END
        $$
    """)
