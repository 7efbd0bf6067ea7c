"""Benchmarks, each run as ``python -m bench.<name>`` (see docs/performance.md); not shipped."""
