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
