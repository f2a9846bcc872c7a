"""Benchmarks (`make bench`): each `*_bench.py` module here runs on its own; `run_all` runs them all."""
