"""Benchmark scripts (``python -m bench.<name>``): they print their numbers and write them to logs/bench/."""
