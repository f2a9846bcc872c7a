"""Ingestion throughput vs raw embedding speed, same texts, same run (issue 3's benchmark).

    .venv/bin/python -m bench.ingest_bench [--min-chunks 1000] [--reps 2] [--threads 2]

Starts a real inference service (MiniLM), an embedded Postgres and `aion gateway`, then alternates:
  raw    — the chunk texts the gateway will embed, posted straight to the inference service's
           /v1/embeddings in the gateway's batch size (the model's speed as served), and the same
           texts through sentence-transformers in this process (the model alone);
  ingest — every document uploaded to POST /api/ai/documents (upload, extraction, chunking,
           embedding, Postgres writes, commit) on an empty database: 8 files per request as
           `aion ingest` sends them, and one file per request.
Each repetition measures raw and ingestion back to back; the ratio is taken per repetition (the
machine is shared, so speeds drift between repetitions more than within one).
Target: ingestion >= 80% of the served raw embedding speed. Results: bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.gateway_stack import UNLIMITED
from bench.kb_common import RESULTS, CpuMeter, machine, readme_corpus, say


def chunk_texts(docs: list[tuple[str, str]]) -> list[str]:
    from services.gateway.services.chunking import chunk_blocks
    from services.gateway.services.extract import detect_kind, extract
    from services.gateway.services.tokens import load_token_counter

    counter = load_token_counter("auto")
    texts = []
    for name, body in docs:
        ex = extract(detect_kind(name, None), body.encode(), name)
        texts.extend(d.embed_text for d in chunk_blocks(ex.blocks, counter, max_tokens=200, overlap=40))
    return texts


def raw_served(inference_url: str, texts: list[str], batch: int) -> float:
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            r = client.post(f"{inference_url}/v1/embeddings", json={"input": texts[i:i + batch],
                                                                     "encoding_format": "base64"})
            r.raise_for_status()
        return time.perf_counter() - start


def raw_in_process(texts: list[str], threads: int) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    from services.inference.loader import packaged_embedder_dir

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(packaged_embedder_dir()), device="cpu", local_files_only=True)
    model.encode(texts[:64], batch_size=64, normalize_embeddings=True)  # warm-up
    start = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - start


def ingest(gateway_url: str, docs: list[tuple[str, str]], files_per_request: int) -> tuple[float, int]:
    chunks = 0
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        for i in range(0, len(docs), files_per_request):
            group = docs[i:i + files_per_request]
            r = client.post(f"{gateway_url}/api/ai/documents",
                            files=[("files", (name, body.encode(), "text/markdown")) for name, body in group])
            assert r.status_code in (200, 201), r.text
            for result in r.json()["results"]:
                assert result["status"] == "created", result
                chunks += result["chunk_count"]
        return time.perf_counter() - start, chunks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-chunks", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128, help="the gateway's AION_EMBED_BATCH_SIZE")
    parser.add_argument("--no-in-process", action="store_true", help="skip the sentence-transformers run")
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark

    from shared.db import migrate
    from shared.db.embedded import ensure_embedded_postgres, stop_embedded_postgres
    from tests.fixtures.postgres import truncate_all
    from tests.fixtures.servers import ServiceProcess, base_env, free_port, run_inference

    docs = readme_corpus(args.min_chunks)
    texts = chunk_texts(docs)
    say(f"corpus: {len(docs)} package READMEs, {sum(len(b) for _, b in docs):,} chars, {len(texts)} chunks")

    with tempfile.TemporaryDirectory(prefix="aion-bench-") as tmp:
        tmp_path = Path(tmp)
        pgdata = tmp_path / "postgres"
        url = ensure_embedded_postgres(pgdata)
        migrate.upgrade(url)
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        try:
            with run_inference(tmp_path, tmp_path / "logs", AION_THREADS=str(args.threads)) as inference:
                port = free_port()
                env = base_env(tmp_path, DATABASE_URL=url, AION_LOCAL_LLM_URL=inference.url,
                               AION_EMBED_BATCH_SIZE=str(args.batch), AION_LOG_LEVEL="WARNING", **UNLIMITED)
                gateway = ServiceProcess(["gateway", "--port", str(port)], env, tmp_path / "logs" / "gw.log",
                                         f"http://127.0.0.1:{port}").start()
                try:
                    gateway.wait_healthy()
                    raw_served(inference.url, texts[:128], args.batch)  # warm-up
                    runs: dict[str, list[float]] = {"raw_served": [], "ingest": [], "ingest_1_file_per_request": [],
                                                    "raw_in_process": []}
                    ratios: list[float] = []
                    others: list[float] = []
                    for rep in range(args.reps):
                        with CpuMeter(ours={inference.proc.pid, gateway.proc.pid, postmaster}) as meter:
                            runs["raw_served"].append(len(texts) / raw_served(inference.url, texts, args.batch))
                            for key, per_request in (("ingest", 8), ("ingest_1_file_per_request", 1)):
                                truncate_all(url)
                                seconds, chunks = ingest(gateway.url, docs, per_request)
                                assert chunks == len(texts), (chunks, len(texts))
                                runs[key].append(chunks / seconds)
                        others.append(meter.others_cores())
                        ratios.append(runs["ingest"][-1] / runs["raw_served"][-1])
                        say(f"rep {rep + 1}: raw served {runs['raw_served'][-1]:.1f} chunks/s, ingest "
                              f"{runs['ingest'][-1]:.1f} (1 file/request {runs['ingest_1_file_per_request'][-1]:.1f}) "
                              f"chunks/s, other processes {others[-1]} cores")
                finally:
                    gateway.stop()
            if not args.no_in_process:
                with CpuMeter() as meter:
                    for _ in range(args.reps):
                        runs["raw_in_process"].append(len(texts) / raw_in_process(texts, args.threads))
                others.append(meter.others_cores())
                say(f"raw in-process: {statistics.median(runs['raw_in_process']):.1f} chunks/s")
        finally:
            stop_embedded_postgres(pgdata)

    med = {k: round(statistics.median(v), 1) for k, v in runs.items() if v}
    result = {"machine": machine(), "threads": args.threads, "docs": len(docs), "chunks": len(texts),
              "batch": args.batch, "chunks_per_s": med, "runs": runs, "other_processes_cores": others,
              "ingest_vs_raw_served_per_rep": [round(r, 3) for r in ratios],
              "ingest_vs_raw_served": round(statistics.median(ratios), 3)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
