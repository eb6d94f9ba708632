"""Benchmarks, one module per component: ``python -m bench.<name>``; numbers are printed and
written to ``logs/bench/<name>*.txt``. Timings never appear in unit tests."""
