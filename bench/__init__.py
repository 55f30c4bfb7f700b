"""Benchmarks: each module runs as a script (python bench/NAME.py); common.py is shared."""
