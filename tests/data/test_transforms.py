"""Transforms move boxes with the pixels; decode_image handles odd files and rejects bad ones."""
import struct

import cv2
import numpy as np
import pytest
import torch

from dcn_det.data.transforms import (Compose, RandomHorizontalFlip, ResizeShortestEdge,
                                     clip_and_filter_boxes, decode_image, resized_shape)


def _image_with_rect(h, w, box):
    """A black image with a white filled rectangle covering the continuous box ``box``."""
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def _mask_box(img):
    ys, xs = np.nonzero(img[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _target(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    return {"boxes": boxes, "labels": torch.arange(n) if labels is None else torch.tensor(labels),
            "difficult": torch.tensor([i % 2 == 1 for i in range(n)]), "image_id": 3,
            "orig_size": (1, 1)}


def test_flip_moves_boxes_with_pixels_exactly():
    box = (10, 5, 31, 40)
    img = _image_with_rect(50, 64, box)
    out, t = RandomHorizontalFlip(1.0)(img, _target([box]))
    assert np.array_equal(out, img[:, ::-1])
    expected = [64 - 31, 5, 64 - 10, 40]
    assert t["boxes"].tolist() == [expected]
    assert np.array_equal(_mask_box(out), np.array(expected, np.float32))
    assert t["image_id"] == 3 and t["labels"].tolist() == [0]
    back, t2 = RandomHorizontalFlip(1.0)(out, t)
    assert np.array_equal(back, img) and t2["boxes"].tolist() == [list(box)]


def test_flip_probability():
    img = np.zeros((4, 6, 3), np.uint8)
    t = _target([[0, 0, 2, 2]])
    flip0 = RandomHorizontalFlip(0.0)
    assert all(flip0(img, t)[1]["boxes"][0, 0] == 0 for _ in range(20))
    flip = RandomHorizontalFlip(0.5)
    flipped = sum(flip(img, t)[1]["boxes"][0, 0].item() == 4 for _ in range(400))
    assert 150 < flipped < 250


@pytest.mark.parametrize("hw, short, max_size, expected", [
    ((100, 200), 50, 0, (50, 100)),
    ((200, 100), 50, 0, (100, 50)),
    ((100, 400), 200, 500, (125, 500)),  # the long side is capped
    ((81, 97), 60, 1000, (60, 72)),       # 97*60/81 = 71.85 -> 72
])
def test_resized_shape(hw, short, max_size, expected):
    assert resized_shape(*hw, short, max_size) == expected


def test_resize_scales_boxes_with_pixels():
    box = (20, 10, 60, 50)
    img = _image_with_rect(81, 97, box)
    out, t = ResizeShortestEdge([162], 1000, interpolation=cv2.INTER_NEAREST)(img, _target([box]))
    assert out.shape == (162, 194, 3)
    sx, sy = 194 / 97, 162 / 81
    expected = torch.tensor([[20 * sx, 10 * sy, 60 * sx, 50 * sy]])
    torch.testing.assert_close(t["boxes"], expected)
    # The rectangle's pixels in the resized image agree with the box to within a pixel.
    assert np.abs(_mask_box(out) - expected.numpy()[0]).max() <= 1.0


def test_resize_multiscale_choice_covers_all_sizes():
    img = np.zeros((40, 60, 3), np.uint8)
    rs = ResizeShortestEdge([20, 30, 40], 0)
    shorts = {rs(img, _target([[0, 0, 5, 5]]))[0].shape[0] for _ in range(60)}
    assert shorts == {20, 30, 40}


def test_clip_and_drop_degenerate_boxes_with_their_labels():
    t = _target([[-5, -5, 10, 10], [20, 0, 30, 10], [35, 2, 50, 8], [5, 5, 5.0005, 9]],
                labels=[7, 8, 9, 6])
    out = clip_and_filter_boxes(t, 20, 30)
    assert out["boxes"].tolist() == [[0, 0, 10, 10], [20, 0, 30, 10]]
    assert out["labels"].tolist() == [7, 8]
    assert out["difficult"].tolist() == [False, True]
    assert t["boxes"].shape[0] == 4  # the input is not modified


def test_empty_targets_pass_through():
    img = np.zeros((30, 40, 3), np.uint8)
    t = _target(np.zeros((0, 4)))
    out, t2 = Compose([ResizeShortestEdge([60], 0), RandomHorizontalFlip(1.0)])(img, t)
    assert out.shape == (60, 80, 3) and t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)


@pytest.mark.parametrize("make, match", [
    (lambda: ResizeShortestEdge([], 10), "short_sizes"),
    (lambda: ResizeShortestEdge([0], 10), "short_sizes"),
    (lambda: ResizeShortestEdge([10], -1), "max_size"),
    (lambda: RandomHorizontalFlip(1.5), "p"),
])
def test_bad_transform_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----- decode_image -----

def _exif_segment(orientation):
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def test_decode_rgb_png_is_rgb(tmp_path):
    img = np.zeros((5, 7, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "a.png"), img[..., ::-1])
    out = decode_image(str(tmp_path / "a.png"))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and np.array_equal(out, img)


def test_decode_grayscale(tmp_path):
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = decode_image(str(tmp_path / "g.png"))
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


def test_decode_rgba_drops_alpha(tmp_path):
    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 180, 0
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = decode_image(str(tmp_path / "a.png"))
    assert out.shape == (4, 6, 3) and (out[..., 0] == 180).all() and (out[..., 1:] == 0).all()


def test_decode_16bit_to_8bit(tmp_path):
    gray16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300)
    cv2.imwrite(str(tmp_path / "d.png"), gray16)
    out = decode_image(str(tmp_path / "d.png"))
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert np.abs(out[..., 0].astype(int) - gray16 / 257.0).max() <= 1.01


def test_decode_applies_exif_orientation(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = 255  # the left quarter is white
    ok, buf = cv2.imencode(".jpg", img)
    data = buf.tobytes()
    (tmp_path / "r.jpg").write_bytes(data[:2] + _exif_segment(6) + data[2:])  # 6 = rotate 90 CW
    out = decode_image(str(tmp_path / "r.jpg"))
    assert out.shape == (80, 40, 3)
    assert out[:15].mean() > 240 and out[25:].mean() < 15  # the white band is now on top


def test_decode_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        decode_image(str(tmp_path / "nope.jpg"))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_decode_truncated_file(tmp_path, ext):
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode("." + ext, img)
    path = tmp_path / f"t.{ext}"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(RuntimeError, match=f"t.{ext}"):
        decode_image(str(path))


@pytest.mark.parametrize("content", [b"", b"this is not an image at all"])
def test_decode_corrupt_or_empty_file(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match="bad.png"):
        decode_image(str(path))
