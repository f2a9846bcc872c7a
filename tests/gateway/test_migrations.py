"""Migrations on an empty database: upgrade creates the schema, downgrade removes it cleanly."""

from __future__ import annotations

import psycopg

from shared.db import migrate


def _schema(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {
            "tables": {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")},
            "extensions": {r[0] for r in conn.execute("SELECT extname FROM pg_extension")},
            "indexes": {r[0]: r[1] for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")},
            "embedding_type": conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'public.chunks'::regclass AND attname = 'embedding'").fetchone()
            if conn.execute("SELECT to_regclass('public.chunks')").fetchone()[0] else None,
        }


def test_upgrade_empty_database_then_downgrade_cleanly(scratch_database):
    before = _schema(scratch_database)
    assert before["tables"] == set() and "vector" not in before["extensions"]

    migrate.upgrade(scratch_database)
    up = _schema(scratch_database)
    assert {"documents", "chunks", "ai_events", "alembic_version"} <= up["tables"]
    assert "vector" in up["extensions"]
    assert up["embedding_type"] == ("vector(384)",)
    hnsw = up["indexes"]["ix_chunks_embedding_hnsw"]
    assert "USING hnsw" in hnsw and "vector_cosine_ops" in hnsw
    assert "(tenant_id, kind, created_at)" in up["indexes"]["ix_ai_events_tenant_kind_created"]
    assert migrate.current_revision(scratch_database) == migrate.head_revision()

    migrate.downgrade(scratch_database, "base")
    down = _schema(scratch_database)
    assert down["tables"] == {"alembic_version"}
    assert "vector" not in down["extensions"]
    assert migrate.current_revision(scratch_database) is None

    migrate.upgrade(scratch_database)  # and the round trip is repeatable
    assert migrate.current_revision(scratch_database) == migrate.head_revision()


def test_downgrade_keeps_a_vector_extension_other_tables_use(scratch_database):
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE someone_elses (v vector(3))")
    migrate.upgrade(scratch_database)
    migrate.downgrade(scratch_database, "base")
    after = _schema(scratch_database)
    assert "vector" in after["extensions"] and "someone_elses" in after["tables"]
    assert "chunks" not in after["tables"]


def test_orm_models_match_the_migrations(database_url):
    """The knowledge-base models agree with what the migrations built (tables without models are skipped)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shared.db import Base, make_sync_engine

    engine = make_sync_engine(database_url)
    try:
        with engine.connect() as conn:
            modelled = set(Base.metadata.tables)

            def include_name(name, type_, parent_names):
                return name in modelled if type_ == "table" else True

            context = MigrationContext.configure(conn, opts={"include_name": include_name})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_hybrid_search_migration_backfills_existing_chunks(scratch_database):
    """Chunks stored before 0006 get their full-text vector from the upgrade itself (generated column)."""
    migrate.upgrade(scratch_database, "0005_images_web")
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, tenant_id, source_name, mime_type, sha256, size_bytes) VALUES "
                     "('00000000-0000-0000-0000-000000000001', 't', 'a.md', 'text/markdown', 'x', 1)")
        conn.execute("INSERT INTO chunks (tenant_id, document_id, ord, text, heading, token_count, embedding) "
                     "VALUES ('t', '00000000-0000-0000-0000-000000000001', 0, 'Não use a opção --no-deps do pip', "
                     "'Instalação', 8, %s)", (str([0.0] * 384),))
    migrate.upgrade(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        tsv = conn.execute("SELECT tsv::text FROM chunks").fetchone()[0]
        indexes = {r[0]: r[1] for r in conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE "
                                                    "tablename = 'chunks'")}
    # Accents folded, Portuguese stop words ("não", "a", "do") dropped, the flag kept as written.
    assert tsv == "'deps':8 'instalacao':1 'no-deps':6 'opcao':5 'pip':10 'use':3"
    assert "USING gin (tsv)" in indexes["ix_chunks_tsv"]
    migrate.downgrade(scratch_database, "0005_images_web")
    with psycopg.connect(scratch_database) as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'chunks'")}
        assert "tsv" not in columns and conn.execute("SELECT count(*) FROM chunks").fetchone() == (1,)
