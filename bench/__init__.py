"""Benchmarks: run from the checkout's root as ``python -m bench.<name>`` (BENCHMARKS.md)."""
