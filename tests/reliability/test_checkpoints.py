"""Damaged checkpoints and inference files, the pointer, stale temporaries, resuming the wrong
file, symlinks at or above the written path, and a full disk: each gets a named error or a
counted skip or warning."""
import errno
import logging
import os
import runpy

import cv2
import numpy as np
import pytest
import torch

from dcn_det.cli import run_main
from dcn_det.config import load_config, override_config
from dcn_det.engine.resume import load_resume_state
from dcn_det.io import atomic
from dcn_det.io.atomic import (WriteError, save_torch, temp_path_for, write_bytes, write_json,
                              write_text)
from dcn_det.io.checkpoint import CheckpointError, Checkpointer, load_file
from dcn_det.io.checksum import MAGIC, TRAILER_SIZE, verify
from dcn_det.io.model_file import export_inference_file, read_model_file
from dcn_det.predictor import Predictor
from dcn_det.visualization import save_png
from tests.engine.conftest import ROOT, TINY_CONFIG


@pytest.fixture
def logged():
    """The dcn_det log records of WARNING and above, caught at the ``dcn_det`` logger itself
    (``setup_logging`` turns its propagation off, which would hide them from caplog)."""
    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Keep(logging.WARNING)
    log = logging.getLogger("dcn_det")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY_CONFIG)


def _training_state(cfg, iteration, fill=1.0):
    return {"model": {"w": torch.full((256,), fill), "b": torch.arange(64.0)},
            "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": {},
            "iteration": iteration, "rng": {}, "config": cfg.to_dict(), "class_names": ["a", "b"]}


def flip(path, where):
    """Flips one bit of ``path`` at the payload's start, middle or end (or in the trailer)."""
    data = bytearray(open(path, "rb").read())
    payload = len(data) - TRAILER_SIZE
    offset = {"start": 0, "header": 40, "middle": payload // 2, "end": payload - 8,
              "trailer": len(data) - 1}[where]
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))
    return offset


def unsealed(data: bytes) -> bytes:
    """The file as torch.save wrote it (no trailer, ZIP comment length 0)."""
    return data[:-TRAILER_SIZE - 2] + b"\x00\x00"


OFFSETS = ["start", "header", "middle", "end", "trailer"]


# ---------------------------------------------------------------------------------------
# The format


def test_sealed_file_is_a_plain_torch_file_and_verifies(tmp_path):
    path = save_torch(str(tmp_path / "a.pth"), {"x": torch.arange(10)})
    data = open(path, "rb").read()
    assert data[-TRAILER_SIZE:].startswith(MAGIC) and verify(data)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(10))
    assert torch.equal(load_file(path)["x"], torch.arange(10))


def test_the_checksum_is_what_catches_a_flip_in_tensor_data(tmp_path):
    # Without the trailer the same flip loads "fine" with a wrong tensor: the reason it exists.
    path = save_torch(str(tmp_path / "a.pth"), {"w": torch.zeros(4096)})
    old = tmp_path / "old.pth"
    old.write_bytes(unsealed(open(path, "rb").read()))
    flip(str(old), "middle")
    assert torch.load(str(old), weights_only=True)["w"].abs().sum() > 0
    flip(path, "middle")
    with pytest.raises(CheckpointError, match=r"a\.pth.*is corrupt.*SHA-256"):
        load_file(path)


def test_file_without_checksum_loads_with_a_warning(tmp_path, logged):
    path = str(tmp_path / "older.pth")
    torch.save({"x": torch.ones(2)}, path)
    assert load_file(path)["x"].sum() == 2
    assert any("older.pth" in m and "no checksum" in m for m in logged), logged


# ---------------------------------------------------------------------------------------
# Auto-resume: damaged files are skipped (counted, named), never used


@pytest.mark.parametrize("damaged", ["model_0000009.pth", "model_final.pth"])
@pytest.mark.parametrize("where", OFFSETS)
def test_flipped_checkpoint_is_skipped_for_the_previous_one(tmp_path, cfg, logged, damaged,
                                                           where):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5, 5.0))
    ck.save("model_0000009.pth", _training_state(cfg, 10, 10.0))
    if damaged == "model_final.pth":
        ck.save("model_final.pth", _training_state(cfg, 20, 20.0))
    flip(ck.path_for(damaged), where)
    with pytest.raises(CheckpointError, match=damaged.replace(".", r"\.") + ".*corrupt"):
        load_file(ck.path_for(damaged))
    logged.clear()
    state = load_resume_state(ck, "auto", cfg)
    expected = 5 if damaged == "model_0000009.pth" else 10
    assert state["iteration"] == expected and state["model"]["w"][0] == expected
    skipped = [m for m in logged if "skipping unusable checkpoint" in m]
    assert len(skipped) == 1 and damaged in skipped[0] and "corrupt" in skipped[0], logged


def test_every_checkpoint_damaged_stops_with_the_list(tmp_path, cfg, logged):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    names = ["model_0000004.pth", "model_0000009.pth", "model_final.pth"]
    for i, name in enumerate(names):
        ck.save(name, _training_state(cfg, i + 1))
    flip(ck.path_for(names[0]), "middle")
    flip(ck.path_for(names[1]), "start")
    open(ck.path_for(names[2]), "wb").write(b"")  # and one emptied
    with pytest.raises(CheckpointError) as e:
        load_resume_state(ck, "auto", cfg)
    msg = str(e.value)
    assert "no usable checkpoint" in msg and "all 3 are damaged" in msg and "\n" not in msg
    assert all(n in msg for n in names)
    assert len([m for m in logged if "skipping unusable checkpoint" in m]) == 3


def test_empty_folder_starts_from_scratch(tmp_path, cfg):
    assert load_resume_state(Checkpointer(str(tmp_path)), "auto", cfg) is None


# ---------------------------------------------------------------------------------------
# The last_checkpoint pointer


@pytest.mark.parametrize("content, why", [
    (b"garbage that is not a name\n", "not a checkpoint name"),
    (b"\xff\xfe\x00\x9c binary \x80" * 10, "not a checkpoint name"),
    (b"../../etc/model_0000001.pth\n", "not a checkpoint name"),
    (b"model_0000777.pth\n", "does not exist"),
])
def test_bad_pointer_is_ignored_with_a_warning(tmp_path, cfg, logged, content, why):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    ck.save("model_0000009.pth", _training_state(cfg, 10))
    open(os.path.join(ck.folder, "last_checkpoint"), "wb").write(content)
    assert load_resume_state(ck, "auto", cfg)["iteration"] == 10  # the newest file found
    warned = [m for m in logged if "last_checkpoint" in m]
    assert len(warned) == 1 and why in warned[0], logged


def test_pointer_that_cannot_be_read_is_ignored(tmp_path, cfg, logged):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    ptr = os.path.join(ck.folder, "last_checkpoint")
    os.remove(ptr)
    os.mkdir(ptr)  # a folder where the pointer should be: reading it fails
    assert load_resume_state(ck, "auto", cfg)["iteration"] == 5
    assert any("last_checkpoint" in m and "cannot read" in m for m in logged), logged


# ---------------------------------------------------------------------------------------
# Temporaries a killed save left behind


def test_stale_temporaries_are_removed_and_counted(tmp_path, cfg, logged):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    stale = [".tmp_model_0000009.pth.k2j4h1", ".tmp_last_checkpoint.x8", ".last_checkpoint.tmp"]
    for name in stale:
        open(os.path.join(ck.folder, name), "wb").write(b"half a checkpoint")
    assert ck.remove_stale_temporaries() == 3
    assert sorted(os.listdir(ck.folder)) == ["last_checkpoint", "model_0000004.pth"]
    assert any("removed 3 stale temporary" in m for m in logged), logged
    assert ck.remove_stale_temporaries() == 0
    assert load_file(ck.path_for("model_0000004.pth"))["iteration"] == 5


# ---------------------------------------------------------------------------------------
# Files no tool may use: test, export, infer, the Predictor, --resume PATH


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, cfg):
    """(training checkpoint model_final.pth, inference file) of the tiny engine model."""
    from dcn_det.modeling import build_model
    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    ckpt = {**_training_state(cfg, 20), "model": model.state_dict()}
    final = save_torch(str(folder / "model_final.pth"), ckpt)
    inference = export_inference_file(final, str(folder / "deploy.pth"))
    return final, inference


def _tool(name):
    return runpy.run_path(os.path.join(ROOT, "tools", f"{name}.py"), run_name="tool")["main"]


@pytest.mark.parametrize("which", ["model_final.pth", "deploy.pth"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_file_is_refused_naming_it(tmp_path, model_files, capsys,
                                           which, where):
    src = model_files[0] if which == "model_final.pth" else model_files[1]
    path = str(tmp_path / which)
    data = open(src, "rb").read()
    open(path, "wb").write(data)
    read_model_file(path)  # intact: accepted
    flip(path, where)
    pattern = which.replace(".", r"\.") + ".*is corrupt"
    with pytest.raises(CheckpointError, match=pattern):
        Predictor(path)
    runs = {"test": ["--config", TINY_CONFIG, "--checkpoint", path, "--output-dir",
                     str(tmp_path / "test")],
            "export": ["--checkpoint", path, "--output", str(tmp_path / "out.pth")],
            "infer": ["--model", path, "--input", str(tmp_path), "--output-dir",
                      str(tmp_path / "drawn")]}
    for tool, argv in runs.items():
        capsys.readouterr()
        assert run_main(lambda: _tool(tool)(argv)) == 2, tool
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and which in err and "is corrupt" in err, (tool, err)
    assert not os.path.exists(tmp_path / "out.pth")


def test_resume_path_refuses_a_flipped_checkpoint(tmp_path, cfg):
    ck = Checkpointer(str(tmp_path / "run"), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    path = ck.save("model_0000009.pth", _training_state(cfg, 10))
    flip(path, "middle")
    # an explicit path is never swapped for another file
    with pytest.raises(CheckpointError, match=r"model_0000009\.pth.*is corrupt"):
        load_resume_state(ck, path, cfg)


def test_resume_refuses_an_inference_file(model_files, cfg):
    with pytest.raises(CheckpointError) as e:
        load_resume_state(Checkpointer("unused"), model_files[1], cfg)
    msg = str(e.value)
    assert "deploy.pth" in msg and "inference file" in msg and "\n" not in msg


@pytest.mark.parametrize("mode", ["path", "auto"])
def test_resume_refuses_another_model_config_naming_the_keys(tmp_path, cfg, mode):
    other = override_config(cfg, ["model.backbone.depth=34", "model.num_classes=5",
                                  "solver.base_lr=0.5"])
    ck = Checkpointer(str(tmp_path / "reused"), keep_last=0)
    path = ck.save("model_0000009.pth", _training_state(other, 10))
    with pytest.raises(CheckpointError) as e:
        load_resume_state(ck, path if mode == "path" else "auto", cfg)
    msg = str(e.value)
    assert "model_0000009.pth" in msg and "another model config" in msg and "\n" not in msg
    assert "2 key(s) differ" in msg
    assert "model.backbone.depth: 34 in the checkpoint, 18 here" in msg
    assert "model.num_classes: 5 in the checkpoint, 2 here" in msg
    assert "solver" not in msg.split("(")[1]  # a solver change is not a mismatch
    # the same model with another schedule resumes
    longer = override_config(cfg, ["solver.max_iter=40", "solver.base_lr=0.5"])
    path = ck.save("model_0000009.pth", _training_state(cfg, 10))
    assert load_resume_state(ck, path if mode == "path" else "auto", longer)["iteration"] == 10


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path, cfg):
    path = save_torch(str(tmp_path / "weights.pth"), {"model": {"w": torch.ones(1)},
                                                       "config": cfg.to_dict()})
    with pytest.raises(CheckpointError, match=r"weights\.pth.*not a training checkpoint: "
                                              r"missing 'optimizer', 'scheduler'"):
        load_resume_state(Checkpointer("unused"), path, cfg)


# ---------------------------------------------------------------------------------------
# Writers: symlinks at or above the target, unpredictable temporaries


def _png(path, root=None):
    return save_png(path, np.zeros((4, 5, 3), np.uint8), root=root)


def _by_name(path, root=None):
    # temp_path_for: a writer that opens the file by name (OpenCV's VideoWriter)
    with temp_path_for(path, root=root) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")


WRITERS = {
    "text": lambda p, root=None: write_text(p, "new\n", root=root),
    "json": lambda p, root=None: write_json(p, {"a": 1}, root=root),
    "bytes": lambda p, root=None: write_bytes(p, b"new", root=root),
    "torch": lambda p, root=None: save_torch(p, {"a": torch.ones(1)}, root=root),
    "png": lambda p, root=None: _png(p, root=root),
    "by name": _by_name,
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_symlink_target_is_replaced_not_written_through(tmp_path, kind, logged):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    link = out / "file.png"
    os.symlink(outside, link)
    WRITERS[kind](str(link), root=str(out))
    assert outside.read_bytes() == b"precious"
    assert not os.path.islink(link) and os.path.isfile(link)
    assert any("replacing the symlink" in m and "file.png" in m for m in logged), logged
    if kind == "png":
        assert cv2.imread(str(link)).shape == (4, 5, 3)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_symlinked_folder_leading_outside_is_refused(tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "checkpoints")
    target = out / "checkpoints" / "deep" / "file.png"
    with pytest.raises(WriteError, match=r"checkpoints.*is a symlink to .*elsewhere.*outside"):
        WRITERS[kind](str(target), root=str(out))
    assert os.listdir(elsewhere) == []


def test_symlinked_folder_inside_the_root_is_fine(tmp_path):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    os.symlink(out / "real", out / "alias")
    write_text(str(out / "alias" / "a.txt"), "x", root=str(out))
    assert (out / "real" / "a.txt").read_text() == "x"


def test_checkpointer_never_writes_through_links(tmp_path, cfg):
    outside = tmp_path / "victim"
    outside.write_bytes(b"precious")
    ck = Checkpointer(str(tmp_path / "run"), keep_last=0)
    os.makedirs(ck.folder)
    for name in ("model_0000004.pth", "last_checkpoint"):
        os.symlink(outside, ck.path_for(name))
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    assert outside.read_bytes() == b"precious"
    assert load_file(ck.path_for("model_0000004.pth"))["iteration"] == 5
    assert open(ck.path_for("last_checkpoint")).read() == "model_0000004.pth\n"
    # a checkpoints folder that is a link out of the run directory is refused, naming it
    ck2 = Checkpointer(str(tmp_path / "run2"), keep_last=0)
    os.makedirs(ck2.output_dir)
    os.symlink(tmp_path, ck2.folder)
    with pytest.raises(WriteError, match=r"run2/checkpoints'? is a symlink"):
        ck2.save("model_0000004.pth", _training_state(cfg, 5))


def test_predictable_temporary_names_are_not_used(tmp_path):
    # Links planted at every name the older writers used must not be followed.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "metrics.json"
    for name in (f"metrics.json.tmp.{os.getpid()}", "metrics.json.tmp", ".tmp_metrics.json"):
        os.symlink(victim, out / name)
    write_json(str(target), {"AP": 1.0}, root=str(out))
    assert victim.read_bytes() == b"precious" and target.read_text() == '{\n  "AP": 1.0\n}'


# ---------------------------------------------------------------------------------------
# A full disk


def _enospc_on_write(monkeypatch):
    real = os.write
    calls = []

    def write(fd, data):
        calls.append(fd)
        if len(calls) == 1:  # some bytes land first, as on a real disk filling up
            return real(fd, bytes(memoryview(data)[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "write", write)


def _enospc_on_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.parametrize("fail", [_enospc_on_write, _enospc_on_fsync])
def test_disk_full_names_the_folder_and_leaves_no_partial_file(tmp_path, cfg, monkeypatch,
                                                               capsys, fail):
    ck = Checkpointer(str(tmp_path), keep_last=0)
    ck.save("model_0000004.pth", _training_state(cfg, 5))
    before = sorted(os.listdir(ck.folder))
    fail(monkeypatch)
    with pytest.raises(WriteError) as e:
        ck.save("model_0000009.pth", _training_state(cfg, 10))
    monkeypatch.undo()
    assert str(e.value) == (f"cannot write checkpoint model_0000009.pth to {ck.folder}: "
                            "No space left on device")
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(ck.folder)) == before  # no temporary, pointer unchanged
    assert load_resume_state(ck, "auto", cfg)["iteration"] == 5
    # the command-line tools print it as one line and exit 2
    fail(monkeypatch)
    code = run_main(lambda: write_text(str(tmp_path / "config.yaml"), "a: 1", what="config"))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: cannot write config config.yaml to {tmp_path}: "
                                 "No space left on device\n")
    assert os.listdir(tmp_path) == ["checkpoints"]


# ---------------------------------------------------------------------------------------
# tools/train.py end to end


@pytest.mark.slow  # trains the tiny model
def test_train_skips_a_flipped_final_cleans_temporaries_and_refuses_wrong_files(tmp_path):
    from tests.engine.conftest import run_tool
    out = str(tmp_path / "run")
    short = ["--set", "solver.max_iter=10"]
    run_tool("train", "--config", TINY_CONFIG, "--output-dir", out, *short)
    folder = os.path.join(out, "checkpoints")
    final = os.path.join(folder, "model_final.pth")
    deploy = export_inference_file(final, str(tmp_path / "deploy.pth"))
    flip(final, "middle")
    open(os.path.join(folder, ".tmp_model_0000009.pth.x1y2z3"), "wb").write(b"half")

    proc = run_tool("train", "--config", TINY_CONFIG, "--output-dir", out, *short)
    lines = proc.stdout.splitlines()
    skipped = [ln for ln in lines if "skipping unusable checkpoint" in ln]
    assert len(skipped) == 1 and "model_final.pth" in skipped[0] and "corrupt" in skipped[0]
    assert any("resumed from" in ln and "model_0000004.pth" in ln for ln in lines)
    assert any("removed 1 stale temporary" in ln for ln in lines), proc.stdout[-3000:]
    assert sorted(os.listdir(folder)) == ["last_checkpoint", "model_0000004.pth",
                                          "model_final.pth"]
    assert load_file(final)["iteration"] == 10  # rewritten, and it verifies

    for args, names in [(["--resume", deploy], ["deploy.pth", "inference file"]),
                        (["--set", "model.backbone.depth=34"],
                         ["model_final.pth", "model.backbone.depth: 18 in the checkpoint, 34 "
                          "here"])]:
        proc = run_tool("train", "--config", TINY_CONFIG, "--output-dir", out, *args, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("error: cannot resume from") and all(n in err for n in names), err
    assert load_file(final)["iteration"] == 10


def test_resume_ignores_where_the_initial_weights_came_from(tmp_path, cfg):
    # The files named by model.weights / backbone.pretrained are read only by a fresh run, so a
    # moved file must not block resuming; a real model change still does.
    stored = override_config(cfg, ["model.weights='/old/place/detector.pth'",
                                   "model.backbone.pretrained='/old/place/r101.pkl'"])
    ck = Checkpointer(str(tmp_path / "moved"), keep_last=0)
    path = ck.save("model_0000009.pth", _training_state(stored, 10))
    moved = override_config(cfg, ["model.weights='/new/place/detector.pth'",
                                  "model.backbone.pretrained=''"])
    load_resume_state(ck, path, moved)
    with pytest.raises(CheckpointError, match="model.num_classes"):
        load_resume_state(ck, path, override_config(moved, ["model.num_classes=5"]))
