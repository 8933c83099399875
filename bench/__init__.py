"""Benchmarks that print JSON: quality, speed, ingest and viewer."""
