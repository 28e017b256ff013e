"""Benchmarks: run_benchmarks.py (ratios measured side by side on this machine) and gpu_check.py (on a GPU)."""
