"""Benchmarks, one module per component: ``python -m bench.<name>``; numbers are printed and
written to ``logs/bench/<name>*.txt``. Timings never appear in unit tests."""


def write_results(out, name: str, text: str, data) -> None:
    """``out/<name>.txt`` (the printed table) and ``out/<name>.json`` (the figures behind it)."""
    import json
    from pathlib import Path
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(text + "\n")
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
