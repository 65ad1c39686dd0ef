"""Checkpoint files: atomic writes, pointer, retention, corrupt and unsafe files."""
import os
import pickle

import pytest
import torch

from dcn_det.io.checkpoint import CheckpointError, Checkpointer, atomic_save, load_file


def _state(i):
    return {"model": {"w": torch.full((3,), float(i))}, "iteration": i}


def test_save_pointer_and_retention(tmp_path):
    ck = Checkpointer(str(tmp_path), keep_last=2)
    for i in range(5):
        ck.save(f"model_{i:07d}.pth", _state(i))
    names = sorted(os.listdir(ck.folder))
    assert names == ["last_checkpoint", "model_0000003.pth", "model_0000004.pth"]
    assert open(os.path.join(ck.folder, "last_checkpoint")).read().strip() == "model_0000004.pth"
    assert ck.load_latest()["iteration"] == 4
    ck.save("model_final.pth", _state(9))
    assert ck.load_latest()["iteration"] == 9
    assert "model_final.pth" in os.listdir(ck.folder)


def test_truncated_newest_is_skipped_with_warning(tmp_path, caplog):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000000.pth", _state(0))
    path = ck.save("model_0000001.pth", _state(1))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model_0000001.pth"):
        load_file(path)
    with caplog.at_level("WARNING"):
        assert ck.load_latest()["iteration"] == 0
    assert "model_0000001.pth" in caplog.text


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_unsafe_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil(str(marker))}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_file(str(path))
    assert not marker.exists()
    # also in torch's own zip format
    path2 = tmp_path / "evil2.pth"
    torch.save({"model": _Evil(str(marker))}, path2)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_file(str(path2))
    assert not marker.exists()


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_file(str(tmp_path / "nope.pth"))
    atomic_save([1, 2], str(tmp_path / "list.pth"))
    with pytest.raises(CheckpointError, match="not a dict"):
        load_file(str(tmp_path / "list.pth"))


def test_atomic_save_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "a.pth")
    atomic_save({"x": torch.ones(1)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"x": torch.zeros(1)}, path)
    monkeypatch.undo()
    assert load_file(path)["x"].item() == 1.0
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")] == []
