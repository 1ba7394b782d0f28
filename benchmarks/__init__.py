"""Ratio benchmarks of captum-ext against Captum / Quantus / naive equivalents."""
