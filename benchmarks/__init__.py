"""Benchmarks for the Fast-WAM plugin (not part of the installed package)."""
