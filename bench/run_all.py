"""Run every benchmark module present in bench/ (`*_bench.py`), one process each, in name order.

`python -m bench.run_all` (what `make bench` calls); `--only inference` picks some; arguments after
`--` go to every benchmark. Exit status: the number of benchmarks that failed.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("bench.run_all")

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def discover() -> list[str]:
    """Module names of the benchmarks present, e.g. ['ann_bench', 'inference_bench']."""
    return sorted(p.stem for p in BENCH_DIR.glob("*_bench.py"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None,
                        help="benchmark names to run (with or without the _bench suffix)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    names = discover()
    if args.only:
        wanted = {n.removesuffix("_bench") for n in args.only}
        names = [n for n in names if n.removesuffix("_bench") in wanted]
    if not names:
        logger.error("no benchmark selected (present: %s)", ", ".join(discover()) or "none")
        return 1
    failed = []
    for name in names:
        logger.info("running bench.%s", name)
        started = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra], cwd=REPO)
        logger.info("bench.%s finished with exit status %d in %.0f s", name, rc, time.perf_counter() - started)
        if rc != 0:
            failed.append(name)
    if failed:
        logger.error("failed: %s", ", ".join(failed))
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
