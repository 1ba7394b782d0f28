"""Benchmark rows, one module per capability; each defines ``rows(device, quick)``."""
