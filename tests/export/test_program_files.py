"""Program and ONNX files: ``load_program`` (fresh process, missing and corrupt files) and the
atomic ONNX write."""
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from dcn_det.export import load_program, program_to_onnx
from dcn_det.io.atomic import WriteError
from dcn_det.io.checkpoint import CheckpointError
from dcn_det.ops import DeformConv2d

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


def test_load_program_missing_file(tmp_path):
    path = str(tmp_path / "none.pt2")
    with pytest.raises(FileNotFoundError, match="none.pt2.*does not exist") as e:
        load_program(path)
    _one_line(e.value)


@pytest.mark.parametrize("damage", ["empty", "garbage", "other_zip"])
def test_load_program_corrupt_file(tmp_path, damage):
    path = str(tmp_path / "bad.pt2")
    if damage == "other_zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"not a program")
    else:
        with open(path, "wb") as f:
            f.write(b"" if damage == "empty" else os.urandom(300))
    with pytest.raises(CheckpointError, match=r"bad\.pt2.*not a readable torch\.export program") \
            as e:
        load_program(path)
    _one_line(e.value)


def _small_program(path: str):
    """A saved program that calls a dcn_det operator (deform_conv2d), and its input."""
    torch.manual_seed(0)
    conv = DeformConv2d(2, 3, 3, padding=1).eval()
    torch.nn.init.normal_(conv.conv_offset.weight, std=0.3)
    x = torch.randn(1, 2, 6, 7)
    program = torch.export.export(conv, (x,))
    torch.export.save(program, path)
    return conv, x


def _python(code: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # subprocesses
def test_program_in_a_fresh_process(tmp_path):
    path = str(tmp_path / "dc.pt2")
    conv, x = _small_program(path)
    torch.save(x, str(tmp_path / "x.pt"))
    with torch.no_grad():
        want = conv(x)
    # Plain torch.export.load without dcn_det: fails, naming the operator to register.
    plain = _python(f"import torch; torch.export.load({path!r})", str(tmp_path))
    assert plain.returncode != 0
    assert "torch.ops.dcn_det.deform_conv2d" in plain.stderr
    assert "import the custom op" in plain.stderr
    # load_program imports the operators itself.
    code = (f"import torch\nfrom dcn_det.export import load_program\n"
            f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
            f"torch.save(load_program({path!r}).module()(x), {str(tmp_path / 'y.pt')!r})\n")
    fresh = _python(code, str(tmp_path))
    assert fresh.returncode == 0, fresh.stderr
    got = torch.load(str(tmp_path / "y.pt"), weights_only=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # A truncated program is one clear error.
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"dc\.pt2.*not a readable") as e:
        load_program(path)
    _one_line(e.value)


class _FakeOnnxProgram:
    """What ``torch.onnx.export`` returns, reduced to the part ``program_to_onnx`` uses."""

    class model_proto:  # noqa: N801 - mirrors the attribute name
        @staticmethod
        def SerializeToString() -> bytes:  # noqa: N802
            return b"new onnx bytes"


def test_onnx_file_is_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: _FakeOnnxProgram())
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old model")
    assert program_to_onnx(None, str(target)) == str(target)
    assert target.read_bytes() == b"new onnx bytes"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left
    # A failure while replacing leaves the old file whole and no temporary file.
    target.write_bytes(b"old model")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(WriteError, match=r"cannot write ONNX model m\.onnx"):
        program_to_onnx(None, str(target))
    assert target.read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
