"""Benchmarks, each measuring its baseline in the same run: `python -m benchmarks.bench_<what>` from the repository root."""
