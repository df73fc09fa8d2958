"""Benchmark harness: prompt sets by category and the metric arithmetic (issue 3, in progress)."""
