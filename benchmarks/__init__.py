"""Benchmarks of sklearn_deltagrad (run from the repository root)."""
