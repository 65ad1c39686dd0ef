"""tools/visualize_offsets.py and tools/analyze_offsets.py on tiny random models."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from dcn_det.analysis.draw import LEVEL_COLORS, UNIT_COLOR
from dcn_det.data.synthetic import SyntheticDataset
from dcn_det.io.model_file import export_inference_file
from tests.analysis.tiny import DEMO, NAMES, TINY, load_tool, tiny_model


def _save_model(tmp_path, name, arch="rfcn", extra=(), offset_std=0.02, inference_file=True):
    model, cfg = tiny_model(arch, extra, offset_std=offset_std)
    ckpt = {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": NAMES}
    path = str(tmp_path / name)
    if inference_file:
        export_inference_file(ckpt, path)
    else:
        torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two synthetic images (96x128) and one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    ds = SyntheticDataset(2, seed=5, image_size=(96, 128), num_classes=3, min_object_size=20,
                          max_object_fraction=0.8)
    for i, ext in enumerate(("png", "jpg")):
        img = ds.generate(i)["image"]
        cv2.imwrite(str(folder / f"img{i}.{ext}"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (folder / "broken.png").write_bytes(b"not an image")
    return str(folder)


def _read(path):
    img = cv2.imread(path)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _has(img, rgb):
    return int((img == np.array(rgb, np.uint8)).all(-1).sum())


def test_visualize_writes_points_and_bins(tmp_path, images, capsys):
    model = _save_model(tmp_path, "rfcn.pth")
    out = tmp_path / "vis"
    rc = load_tool("visualize_offsets").main(
        ["--model", model, "--input", images, "--output-dir", str(out), "--score-thresh", "0",
         "--max-detections", "2"])
    captured = capsys.readouterr()
    assert rc == 0
    assert sorted(os.listdir(out)) == ["img0_bins.png", "img0_points.png", "img1_bins.png",
                                       "img1_points.png"]
    assert "skipping" in captured.err and "broken.png" in captured.err
    assert "skipped 1 of 3" in captured.err
    points = _read(str(out / "img0_points.png"))
    # Drawn on the image enlarged to a 512-pixel short side (96x128 -> 512x683).
    assert points.shape == (512, 683, 3)
    # Both layers of ResNet-18's res5 chain (9 and 81 points) and the units are visible.
    assert _has(points, LEVEL_COLORS[0]) > 20 and _has(points, LEVEL_COLORS[1]) > 20
    assert _has(points, UNIT_COLOR) > 5
    bins = _read(str(out / "img0_bins.png"))
    assert bins.shape == points.shape and (bins != points).any()


def test_visualize_checkpoint_faster_rcnn_with_given_points(tmp_path, images, capsys):
    model = _save_model(tmp_path, "frcnn_ckpt.pth", arch="faster_rcnn", inference_file=False)
    out = tmp_path / "vis"
    rc = load_tool("visualize_offsets").main(
        ["--model", model, "--input", os.path.join(images, "img1.jpg"), "--output-dir", str(out),
         "--points", "30,50", "100,60", "--score-thresh", "0", "--group", "mean"])
    assert rc == 0
    assert sorted(os.listdir(out)) == ["img1_bins.png", "img1_points.png"]
    img = _read(str(out / "img1_points.png"))
    assert img.shape == (512, 683, 3)  # the 96x128 image (not resized by the model) x 16/3
    # (30, 50) snaps to the stride-16 unit (x, y) = (2, 3) = image (32, 48), (100, 60) to
    # (6, 4) = image (96, 64); both are drawn enlarged x 16/3: at (170.7, 256) and (512, 341.3).
    assert _has(img[247:266, 161:181], UNIT_COLOR) > 0
    assert _has(img[332:351, 503:522], UNIT_COLOR) > 0
    assert _has(img[300:380, 450:570], UNIT_COLOR) == _has(img[332:351, 503:522], UNIT_COLOR)


def test_visualize_without_deformable_conv_or_pooling(tmp_path, images, capsys):
    tool = load_tool("visualize_offsets")
    dpool_only = _save_model(tmp_path, "dpool.pth", extra=["model.backbone.deform_stages=[]"])
    out = tmp_path / "vis"
    assert tool.main(["--model", dpool_only, "--input", os.path.join(images, "img0.png"),
                      "--output-dir", str(out), "--score-thresh", "0"]) == 0
    assert os.listdir(out) == ["img0_bins.png"]
    assert "no deformable convolution" in capsys.readouterr().out
    plain = _save_model(tmp_path, "plain.pth", extra=["model.backbone.deform_stages=[]",
                                                      "model.head.deformable=false"])
    assert tool.main(["--model", plain, "--input", images, "--output-dir", str(out)]) == 2
    assert "neither deformable convolution nor deformable RoI pooling" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--model", dpool_only, "--input", images, "--output-dir", str(out),
                   "--points", "1;2"])


def test_analyze_offsets_prints_table_and_writes_json_and_png(tmp_path, capsys):
    # Offsets left at their zero initialisation: every filter's effective dilation is res5's
    # dilation, 2, in every bucket.
    ckpt = _save_model(tmp_path, "ckpt.pth", offset_std=0.0, inference_file=False)
    out = tmp_path / "analysis"
    rc = load_tool("analyze_offsets").main(
        ["--config", DEMO["rfcn"], "--checkpoint", ckpt, "--output-dir", str(out),
         "--max-images", "3", "--set", *TINY])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "res5.0.conv2" in printed and "res5.1.conv2" in printed and "background" in printed
    assert "2.00 ± 0.00" in printed
    data = json.loads((out / "effective_dilation.json").read_text())
    assert data["layers"] == ["res5.0.conv2", "res5.1.conv2"] and data["num_images"] == 3
    for layer in data["layers"]:
        stats = data["stats"][layer]
        # 96x128 test images (no resize) at output stride 16: 6 x 8 locations each.
        assert sum(s["count"] for s in stats.values()) == 3 * 6 * 8
        assert stats["background"]["count"] > 0
        for s in stats.values():
            assert s["count"] == 0 or s["mean"] == pytest.approx(2.0)
    chart = _read(str(out / "effective_dilation.png"))
    assert chart.shape == (480, 800, 3)


def test_analyze_offsets_rejects_a_model_without_deformable_conv(tmp_path, capsys):
    ckpt = _save_model(tmp_path, "plain.pth", extra=["model.backbone.deform_stages=[]"])
    rc = load_tool("analyze_offsets").main(
        ["--config", DEMO["rfcn"], "--checkpoint", ckpt, "--output-dir", str(tmp_path / "o"),
         "--set", *TINY])
    assert rc == 2 and "no deformable convolution" in capsys.readouterr().err


def test_analyze_offsets_over_several_checkpoints(tmp_path, capsys):
    # Two "seeds": zero offsets (dilation 2 everywhere) and random offsets.
    zero = _save_model(tmp_path, "zero.pth", offset_std=0.0, inference_file=False)
    moved = _save_model(tmp_path, "moved.pth", offset_std=0.05, inference_file=False)
    out = tmp_path / "analysis"
    rc = load_tool("analyze_offsets").main(
        ["--config", DEMO["rfcn"], "--checkpoint", zero, moved, "--output-dir", str(out),
         "--max-images", "2", "--set", *TINY])
    printed = capsys.readouterr().out
    assert rc == 0 and "mean ± std over 2 models" in printed
    per_model = [json.loads((out / f"model{k}" / "effective_dilation.json").read_text())
                 for k in (0, 1)]
    across = json.loads((out / "effective_dilation_across.json").read_text())
    assert _read(str(out / "effective_dilation_across.png")).shape == (480, 800, 3)
    assert across["checkpoints"] == [zero, moved] and across["num_tables"] == 2
    bg = [m["stats"]["res5.1.conv2"]["background"]["mean"] for m in per_model]
    assert bg[0] == pytest.approx(2.0) and bg[1] != pytest.approx(2.0, abs=1e-3)
    got = across["stats"]["res5.1.conv2"]["background"]
    assert got["n"] == 2 and got["mean"] == pytest.approx(sum(bg) / 2, abs=1e-5)
    assert got["std"] == pytest.approx(abs(bg[0] - bg[1]) / 2 ** 0.5, abs=1e-5)
