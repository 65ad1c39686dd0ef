"""Predictor (resize, rescale back, inputs), drawing, PNG output and tools/infer.py."""
import json
import os
import struct

import cv2
import numpy as np
import pytest
import torch

from dcn_det.data.transforms import decode_image, resized_shape
from dcn_det.predictor import Predictor
from dcn_det.visualization import class_color, draw_detections, save_png
from dcn_det.io.checkpoint import CheckpointError
from dcn_det.io.model_file import FORMAT, export_inference_file, load_inference_file
from tests.engine.conftest import run_tool
from tests.test_export import NAMES, TinyDetector, real_checkpoint, real_tiny_model, tiny_config


@pytest.fixture
def predictor():
    torch.manual_seed(0)
    return Predictor.from_model(TinyDetector(), tiny_config(), NAMES, score_thresh=0.0)


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(150, 90), (60, 100)])
def test_boxes_equal_direct_call_scaled_back(predictor, hw):
    h, w = hw
    image = random_image(h, w)
    got = predictor(image)
    cfg = tiny_config().data
    nh, nw = resized_shape(h, w, cfg.min_size_test, cfg.max_size_test)
    assert (nh, nw) != (h, w)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        direct = predictor.model([torch.from_numpy(resized).permute(2, 0, 1).contiguous()])[0]
    scale = torch.tensor([w / nw, h / nh, w / nw, h / nh])
    assert len(direct["scores"]) > 0
    torch.testing.assert_close(got["boxes"], direct["boxes"] * scale)
    torch.testing.assert_close(got["scores"], direct["scores"])
    assert torch.equal(got["labels"], direct["labels"])
    assert got["class_names"] == [NAMES[k] for k in direct["labels"].tolist()]
    # Boxes are in the original frame: within [0, w] x [0, h].
    assert float(got["boxes"][:, 0::2].max()) <= w + 1e-4
    assert float(got["boxes"][:, 1::2].max()) <= h + 1e-4


def test_score_threshold_and_order(predictor):
    image = random_image(90, 120, seed=3)
    everything = predictor(image)
    predictor.score_thresh = float(everything["scores"].median())
    kept = predictor(image)
    assert 0 < len(kept["scores"]) < len(everything["scores"])
    assert bool((kept["scores"] >= predictor.score_thresh).all())
    assert bool((kept["scores"][:-1] >= kept["scores"][1:]).all())
    assert kept["boxes"].shape == (len(kept["scores"]), 4) and kept["labels"].dtype == torch.int64


def test_path_input_equals_array_input(predictor, tmp_path):
    image = random_image(70, 100, seed=1)
    path = str(tmp_path / "img.png")
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert np.array_equal(decode_image(str(path)), image)  # BGR -> RGB
    a, b = predictor(path), predictor(image)
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Inserts an APP1 EXIF segment holding only the Orientation tag after the JPEG's SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + \
        struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_exif_orientation_is_applied(predictor, tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:10, :20] = (255, 0, 0)  # a red block in the top-left corner
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    path = tmp_path / "rot.jpg"
    path.write_bytes(_with_exif_orientation(jpeg.tobytes(), 6))  # 6 = rotate 90 deg clockwise
    rgb, resized = predictor.preprocess(path)
    assert rgb.shape == (60, 40, 3) and resized.shape == (3, 72, 48)
    # After a clockwise turn the top-left corner is at the top right.
    assert rgb[2:8, -8:-2, 0].mean() > 200 and rgb[2:8, -8:-2, 2].mean() < 50


def test_bad_inputs(predictor, tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*float32"):
        predictor(random_image(20, 20).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8.*\(20, 20\)"):
        predictor(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="got list"):
        predictor([[0, 0, 0]])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predictor(str(tmp_path / "nope.png"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(RuntimeError, match="bad.jpg"):
        predictor(str(bad))
    with pytest.raises(ValueError, match=r"score_thresh must be in \[0, 1\], got 1.5"):
        Predictor.from_model(TinyDetector(), tiny_config(), NAMES, score_thresh=1.5)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        Predictor.from_model(TinyDetector(), tiny_config(), NAMES[:2])


def test_draw_detections():
    image = np.full((60, 80, 3), 128, np.uint8)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 55.0], [5.0, 5.0, 30.0, 30.0]])
    drawn = draw_detections(image, boxes, torch.tensor([0.9, 0.2]), torch.tensor([2, 0]),
                            NAMES, score_thresh=0.5)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 128).all()  # input untouched
    assert tuple(drawn[40, 10]) == class_color(2)  # left edge of the kept box
    assert tuple(drawn[50, 50]) == class_color(2)  # right edge
    assert (drawn[35:45, 20:40] == 128).all()  # inside the box is untouched
    assert (drawn[25, 5] == 128).all()  # the low-score box was not drawn
    assert len({class_color(k) for k in range(20)}) == 20
    empty = draw_detections(image, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), NAMES)
    assert np.array_equal(empty, image)
    with pytest.raises(ValueError, match=r"labels must be in 0..2.*\[0, 3\]"):
        draw_detections(image, boxes, torch.tensor([0.9, 0.8]), torch.tensor([3, 0]), NAMES)
    with pytest.raises(ValueError, match="same length"):
        draw_detections(image, boxes, torch.tensor([0.9]), torch.tensor([1, 0]), NAMES)


def test_save_png(tmp_path):
    image = random_image(30, 40)
    path = save_png(str(tmp_path / "a" / "b.png"), image)
    assert np.array_equal(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), image)
    with pytest.raises(ValueError, match=r"must end in '\.png'"):
        save_png(str(tmp_path / "x.jpg"), image)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        save_png(str(tmp_path / "x.png"), image[..., 0])


# ---------------------------------------------------------------------------------------
# The real detector (tiny, random weights) through inference files, Predictor and the tools.


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(model, cfg, training checkpoint path, fp32 inference file, fp16 inference file)."""
    folder = tmp_path_factory.mktemp("real")
    model, cfg = real_tiny_model("rfcn")
    ckpt = str(folder / "model_final.pth")
    torch.save(real_checkpoint(model, cfg), ckpt)
    fp32 = export_inference_file(ckpt, str(folder / "m.pth"))
    fp16 = export_inference_file(ckpt, str(folder / "m16.pth"), fp16=True)
    return model, cfg, ckpt, fp32, fp16


def test_predictor_from_file_equals_direct_call(real):
    model, cfg, ckpt, fp32, _ = real
    image = random_image(150, 90, seed=4)
    nh, nw = resized_shape(150, 90, cfg.data.min_size_test, cfg.data.max_size_test)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        direct = model([torch.from_numpy(resized).permute(2, 0, 1).contiguous()])[0]
    assert len(direct["scores"]) > 0
    want = direct["boxes"] * torch.tensor([90 / nw, 150 / nh, 90 / nw, 150 / nh])
    for path in (fp32, ckpt):  # an inference file and a training checkpoint
        pred = Predictor(path, score_thresh=0.0)
        assert pred.class_names == ["disc", "square", "triangle"]  # stored in the checkpoint
        got = pred(image)
        order = torch.argsort(direct["scores"], descending=True, stable=True)
        torch.testing.assert_close(got["boxes"], want[order])
        torch.testing.assert_close(got["scores"], direct["scores"][order])
        assert torch.equal(got["labels"], direct["labels"][order])


def test_predictor_fp16_file_is_close(real):
    _, _, _, fp32, fp16 = real
    image = random_image(64, 96, seed=5)
    a = Predictor(fp32, score_thresh=0.0)(image)
    b = Predictor(fp16, score_thresh=0.0)(image)
    # Half-rounded weights move scores a little; the best detections stay.
    torch.testing.assert_close(b["scores"][:3], a["scores"][:3], rtol=0, atol=2e-2)


def test_predictor_refuses_bad_files(tmp_path, real):
    path = tmp_path / "broken.pth"
    path.write_bytes(open(real[3], "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="broken.pth"):
        Predictor(str(path))




@pytest.mark.slow  # the export and infer commands
def test_export_and_infer_tools_write_pngs(tmp_path, real):
    _, _, ckpt, _, _ = real
    model_file = str(tmp_path / "exported.pth")
    r = run_tool("export", "--checkpoint", ckpt, "--output", model_file, check=False)
    assert r.returncode == 0, r.stderr
    assert model_file in r.stdout and load_inference_file(model_file)["format"] == FORMAT
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.jpg", "b.png", "a.png"]):
        cv2.imwrite(str(images / name), random_image(70 + 10 * i, 100, seed=i))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    r = run_tool("infer", "--model", model_file, "--input", str(images), "--output-dir",
                 str(out), "--score-thresh", "0.0", check=False)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["a.png", "a_png.png", "b.png", "detections.json"]
    records = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in records} == {"a.jpg", "b.png", "a.png"}
    assert {"image_id", "file_name", "category_id", "category_name", "bbox", "score"} == \
        set(records[0])
    for name, src in [("a.png", "a.jpg"), ("a_png.png", "a.png"), ("b.png", "b.png")]:
        drawn, orig = cv2.imread(str(out / name)), cv2.imread(str(images / src))
        assert drawn.shape == orig.shape and str(out / name) in r.stdout
    # With score threshold 0 every image has detections, so the drawing changed pixels.
    assert not np.array_equal(cv2.imread(str(out / "b.png")), cv2.imread(str(images / "b.png")))
    r = run_tool("infer", "--model", str(tmp_path / "missing.pth"), "--input", str(images),
                 "--output-dir", str(out), check=False)
    assert r.returncode == 2 and "missing.pth" in r.stderr and "Traceback" not in r.stderr
    # a video: a drawn video and per-frame JSON; a broken one: one line naming it, exit 2
    from tests.test_inference import read_video, write_video
    clip = write_video(tmp_path / "clip.mp4", frames=4, size=(80, 64), fps=12.0)
    r = run_tool("infer", "--model", model_file, "--input", clip, "--output-dir",
                 str(tmp_path / "vid"), "--score-thresh", "0.0", check=False)
    assert r.returncode == 0, r.stderr
    frames, fps = read_video(tmp_path / "vid" / "clip.mp4")
    assert len(frames) == 4 and frames[0].shape == (64, 80, 3) and fps == pytest.approx(12.0)
    assert json.loads((tmp_path / "vid" / "clip.json").read_text())["num_frames"] == 4
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    r = run_tool("infer", "--model", model_file, "--input", str(tmp_path / "bad.mp4"),
                 "--output-dir", str(tmp_path / "vid2"), check=False)
    assert r.returncode == 2 and "bad.mp4" in r.stderr and "Traceback" not in r.stderr


def test_predictor_names_file_whose_weights_do_not_fit(tmp_path, real):
    model, cfg, _, _, _ = real
    state = dict(model.state_dict())
    state.pop(next(iter(state)))
    path = str(tmp_path / "partial.pth")
    torch.save({"model": state, "config": cfg.to_dict()}, path)
    with pytest.raises(CheckpointError, match=r"(?s)partial\.pth.*do not fit.*Missing key"):
        Predictor(path)


# ---------------------------------------------------------------------------------------
# Batches, channel order and tensor inputs.

def test_bgr_with_format_bgr_equals_rgb(real):
    model, cfg, _, _, _ = real
    pred = Predictor.from_model(model, cfg, ["disc", "square", "triangle"], score_thresh=0.0)
    rgb = random_image(80, 110, seed=7)
    rgb[20:60, 30:90] = (230, 40, 10)  # a strongly coloured block: channel order matters
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    want = pred(rgb)
    assert len(want["scores"]) > 0
    for got in (pred(bgr, format="BGR"),
                Predictor.from_model(model, cfg, pred.class_names, score_thresh=0.0,
                                     format="BGR")(bgr),
                pred(torch.from_numpy(rgb).permute(2, 0, 1)),  # CHW uint8 tensor
                pred(torch.from_numpy(bgr).permute(2, 0, 1), format="BGR")):
        assert torch.equal(got["boxes"], want["boxes"])
        assert torch.equal(got["scores"], want["scores"])
        assert torch.equal(got["labels"], want["labels"])
    # the same pixels read in the wrong order are another image to the model
    wrong = pred(bgr)
    assert wrong["scores"].shape != want["scores"].shape or \
        not torch.equal(wrong["scores"], want["scores"])


def test_batch_equals_one_by_one(real):
    model, cfg, _, _, _ = real
    pred = Predictor.from_model(model, cfg, ["disc", "square", "triangle"], score_thresh=0.0)
    images = [random_image(64, 96, seed=s) for s in (10, 11, 12)]  # one size: same padding
    batch = pred(images)
    assert isinstance(batch, list) and len(batch) == 3
    for image, got in zip(images, batch):
        want = pred(image)
        assert len(want["scores"]) > 0
        torch.testing.assert_close(got["boxes"], want["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got["scores"], want["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(got["labels"], want["labels"])
    # a tuple is a batch too, and a one-image list gives a one-element list
    assert len(pred(tuple(images[:2]))) == 2 and isinstance(pred(images[:1]), list)


def test_batch_of_different_sizes_keeps_order_and_frames(predictor, tmp_path):
    # TinyDetector runs each image alone, so the batch must match exactly, in order, with
    # every image's boxes in its own original frame (a path, an array and a tensor mixed).
    images = [random_image(150, 90, seed=1), random_image(60, 100, seed=2),
              random_image(70, 70, seed=5)]
    path = str(tmp_path / "first.png")
    cv2.imwrite(path, cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    batch = predictor([path, images[1], torch.from_numpy(images[2]).permute(2, 0, 1)])
    for image, got in zip(images, batch):
        want = predictor(image)
        assert len(want["scores"]) > 0
        assert torch.equal(got["boxes"], want["boxes"]) and got["class_names"] == \
            want["class_names"]
        h, w = image.shape[:2]
        assert float(got["boxes"][:, 0::2].max()) <= w + 1e-4
        assert float(got["boxes"][:, 1::2].max()) <= h + 1e-4


def test_bad_formats_tensors_and_batches(predictor):
    image = random_image(20, 30)
    with pytest.raises(ValueError, match=r"format must be 'RGB' or 'BGR'.*got 'rgb'"):
        predictor(image, format="rgb")
    with pytest.raises(ValueError, match=r"format must be 'RGB' or 'BGR'.*got 'YUV'"):
        Predictor.from_model(TinyDetector(), tiny_config(), NAMES, format="YUV")
    with pytest.raises(ValueError, match=r"tensor must be \(3, H, W\) uint8 \(CHW\), got "
                                         r"tensor uint8 \(20, 30, 3\)"):
        predictor(torch.from_numpy(image))  # HWC tensor
    with pytest.raises(ValueError, match=r"got tensor float32 \(3, 20, 30\)"):
        predictor(torch.zeros(3, 20, 30))
    with pytest.raises(ValueError, match=r"images\[1\] must be .*got array int64 \(20, 30, 3\)"):
        predictor([image, image.astype(np.int64)])
    with pytest.raises(ValueError, match="empty list"):
        predictor([])
