"""utils.atomic: a failed write leaves the previous file and no temporary behind."""
import pytest
import torch

from utils.atomic import atomic_torch_save, atomic_write, atomic_write_text


def test_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "meta.txt", "old\n")
    assert path.read_text() == "old\n"

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt   # e.g. Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["meta.txt"]


def test_torch_save_round_trip(tmp_path):
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "x.tar")
    assert torch.equal(torch.load(tmp_path / "x.tar")["w"], torch.arange(3))


def test_file_set_appears_whole_or_not_at_all(tmp_path):
    from utils.atomic import AtomicFileSet
    (tmp_path / "b.txt").write_text("old b\n")

    def full_disk(tmp):
        with open(tmp, "w") as f:
            f.write("ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        with AtomicFileSet() as files:
            files.add_text(tmp_path / "a.txt", "new a\n")
            files.add(tmp_path / "b.txt", full_disk)
            files.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "old b\n"
    with AtomicFileSet() as files:
        files.add_text(tmp_path / "a.txt", "new a\n")
        files.add_text(tmp_path / "b.txt", "new b\n")
        assert (tmp_path / "b.txt").read_text() == "old b\n"          # nothing moves before commit
        assert files.commit() == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"] and (tmp_path / "b.txt").read_text() == "new b\n"


def test_stale_temp_files_of_a_killed_write_are_removed_at_start(tiny_room, tmp_path, one_thread):
    """issue 14: each kill during a checkpoint write left a hidden .NNNNNN.tar.*.tmp forever."""
    import os
    import time
    import run_nefes
    from conftest import tiny_nefes_args
    from utils.atomic import remove_stale_temp_files
    exp = tmp_path / "exp"
    exp.mkdir()
    old, fresh, other = exp / ".000003.tar.abc123.tmp", exp / ".000004.tar.def456.tmp", exp / "keep.tmp"
    for p in (old, fresh, other):
        p.write_bytes(b"x" * 1000)
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert remove_stale_temp_files(exp) == [old]                       # a concurrent writer's file stays
    assert fresh.exists() and other.exists()
    os.utime(fresh, (past, past))
    assert run_nefes.main(tiny_nefes_args(tiny_room, tmp_path, "exp", "--epochs", 1, "--i_weights", 1,
                                          "--i_testset", 5, "--stage1_color_only")) == 0
    assert not fresh.exists() and other.exists()
