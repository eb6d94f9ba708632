"""bench.refine_vs_commit: the two sides take turns, the table reports both and their ratio (fake runs);
a commit that does not exist is one error line."""
import pytest

from bench import refine_vs_commit as rvc


def test_sides_take_turns_and_the_table_reports_the_ratio(tmp_path):
    order = []

    def side(name, seconds):
        return lambda k: order.append((name, k)) or dict(seconds=seconds[k], t=0.01, r=0.2, ranks=2)
    runs = rvc.alternate(side("then", [3.0, 3.4]), side("today", [2.4, 2.6]), repeat=2)
    assert order == [("then", 0), ("today", 0), ("today", 1), ("then", 1)]   # neither always runs first
    text, data = rvc.table(runs, "abc1234", tmp_path)
    assert data["then"]["median"] == pytest.approx(3.2) and data["today"]["median"] == pytest.approx(2.5)
    assert data["ratio"] == pytest.approx(2.5 / 3.2)
    assert "| abc1234 | 3.00, 3.40 | 3.20 |" in text and "today / abc1234: x0.78" in text and "2 process(es)" in text


def test_unknown_commit_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match="error: cannot check out 0000000"):
        rvc.checkout("0000000", tmp_path)


def test_missing_demo_is_one_error_line(tmp_path):
    with pytest.raises(SystemExit, match="demo_summary.json not found: run demo.sh"):
        rvc.main(["--demo_dir", str(tmp_path), "--root", str(tmp_path / "commits"), "--out", str(tmp_path)])
    assert not (tmp_path / "commits").exists()             # nothing checked out before the check
