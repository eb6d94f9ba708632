"""An experiment folder belongs to one setup (issue 14): the same ``expname`` on another scene, dataset
type, ``df`` or field type must not silently resume the old run's checkpoint and overwrite its args.txt."""
import shutil

import run_nefes
from conftest import tiny_nefes_args


def test_same_expname_on_another_scene_is_refused_with_both_names(tiny_room, tmp_path, capsys, one_thread):
    other = tmp_path / "other_room"
    shutil.copytree(tiny_room, other)
    base = tmp_path / "logs"
    run = lambda data, *extra: run_nefes.main(tiny_nefes_args(data, base, "exp", "--epochs", 1, "--i_weights", 1,
                                                              "--i_testset", 5, "--stage1_color_only", *extra))
    assert run(tiny_room) == 0
    args_txt = (base / "exp" / "args.txt").read_text()
    capsys.readouterr()
    assert run(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "room" in err[0] and "other_room" in err[0] and "--no_reload" in err[0], err
    assert (base / "exp" / "args.txt").read_text() == args_txt          # nothing overwritten
    assert run(tiny_room, "--df", "2") == 2                                  # another working size
    assert "df 1.0 -> 2.0" in capsys.readouterr().err
    assert run(tiny_room, "--epochs", 2) == 0                                # the same setup resumes
    assert run(other, "--no_reload") == 0                                    # starting over is explicit
    assert str(other) in (base / "exp" / "args.txt").read_text()


def test_train_log_holds_each_epoch_once_after_a_resume(tiny_room, tmp_path, one_thread):
    """issue 14: train_log.jsonl got duplicate epoch rows after restarts."""
    import json
    base = tmp_path / "logs"
    argv = tiny_nefes_args(tiny_room, base, "exp", "--epochs", 3, "--i_weights", 1, "--i_testset", 50,
                           "--stage1_color_only")
    assert run_nefes.main(argv) == 0
    (base / "exp" / "000002.tar").unlink()
    (base / "exp" / "000001.tar").unlink()                                  # as if killed after epoch 0's save
    assert run_nefes.main(argv) == 0                                          # resumes at epoch 1
    epochs = [json.loads(line)["epoch"] for line in (base / "exp" / "train_log.jsonl").read_text().splitlines()
              if "phase" in json.loads(line)]
    assert epochs == [0, 1, 2]


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_room, tmp_path, caplog, one_thread):
    """issue 14: a corrupt latest checkpoint was one clear line, but resuming did not fall back."""
    import logging
    base = tmp_path / "logs"
    argv = tiny_nefes_args(tiny_room, base, "exp", "--epochs", 3, "--i_weights", 1, "--i_testset", 50,
                           "--stage1_color_only")
    assert run_nefes.main(argv) == 0
    latest = base / "exp" / "000002.tar"
    latest.write_bytes(latest.read_bytes()[:5000])                           # a disk fault
    with caplog.at_level(logging.WARNING):
        assert run_nefes.main(argv) == 0
    assert "000002.tar" in caplog.text and "resuming from" in caplog.text and "000001.tar instead" in caplog.text
    from models.nefes import load_nefes
    assert load_nefes(latest, "cpu")[1]["global_step"] == 2                    # epoch 2 trained again


def test_dfnet_same_expname_on_another_scene_is_refused(tmp_path, monkeypatch, capsys):
    """train_dfnet.py: dfnet_last.tar records its scene; another scene in the same folder is refused
    before args.txt is touched, and --no_reload starts over."""
    import dataset_loaders
    import train_dfnet
    from test_dfnet_training import _FakeScene
    names = iter(["kitchen", "office", "office"])

    def load(args):
        s = _FakeScene()
        s.name = next(names)
        return s
    monkeypatch.setattr(dataset_loaders, "load_scene", load, raising=False)
    argv = ["--basedir", str(tmp_path), "--expname", "e", "--epochs", "1", "--dfnet_width", "0.0625",
            "--combine_loss_w", "1", "0", "0", "--rvs_loss_w", "0"]
    assert train_dfnet.main(argv) == 0
    args_txt = (tmp_path / "e" / "args.txt").read_text()
    capsys.readouterr()
    assert train_dfnet.main(argv + ["--epochs", "2"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")]
    assert len(err) == 1 and "'kitchen'" in err[0] and "'office'" in err[0] and "--no_reload" in err[0]
    assert (tmp_path / "e" / "args.txt").read_text() == args_txt
    assert train_dfnet.main(argv + ["--no_reload"]) == 0
    from models.dfnet import read_checkpoint
    assert read_checkpoint(tmp_path / "e" / "dfnet_last.tar")["run_identity"]["scene"] == "office"
