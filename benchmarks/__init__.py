"""Benchmarks: the generated runtime against the library engines."""
