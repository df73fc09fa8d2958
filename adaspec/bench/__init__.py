"""Benchmark harness: prompt sets by category, the runner that interleaves methods, metrics, resumable records and reports."""
