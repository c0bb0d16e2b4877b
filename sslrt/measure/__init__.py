"""Measurement: the official metrics, evaluation on the test sets, parity between engines, benchmarks."""
