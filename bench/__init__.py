"""Benchmark harness of the NCT04582136 CDS Hooks service (not a test suite): ``python -m bench``."""
