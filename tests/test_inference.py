"""dcn_det.inference: COCO-style detection records, images and videos through a Predictor."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from dcn_det.inference import (VideoError, detections_to_records, infer_images, infer_video,
                               is_video)
from tests.test_export import NAMES
from tests.test_predictor import predictor, random_image  # noqa: F401 (fixture)


def test_records_are_coco_results_with_names():
    det = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.5], [0.0, 0.0, 5.0, 4.0]]),
           "scores": torch.tensor([0.9, 0.25]), "labels": torch.tensor([2, 0])}
    got = detections_to_records(det, 7, "a.jpg", NAMES)
    assert got == [
        {"image_id": 7, "file_name": "a.jpg", "category_id": 3, "category_name": "triangle",
         "bbox": [10.0, 20.0, 40.0, 40.5], "score": pytest.approx(0.9)},
        {"image_id": 7, "file_name": "a.jpg", "category_id": 1, "category_name": "disc",
         "bbox": [0.0, 0.0, 5.0, 4.0], "score": pytest.approx(0.25)}]
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    assert detections_to_records(empty, 1, "b.png", NAMES) == []


def test_infer_images_writes_pngs_and_one_json(predictor, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    images = {"a.jpg": random_image(150, 90, seed=1), "b.png": random_image(60, 100, seed=2)}
    for name, rgb in images.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "c.png").write_bytes(b"not an image")
    paths = [str(folder / n) for n in ("a.jpg", "b.png", "c.png")]
    out = tmp_path / "out"
    assert infer_images(predictor, paths, str(out), str(folder)) == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "detections.json"]
    assert "skipped" in capsys.readouterr().err
    records = json.loads((out / "detections.json").read_text())
    for image_id, name in ((1, "a.jpg"), (2, "b.png")):
        want = predictor(cv2.cvtColor(cv2.imread(str(folder / name)), cv2.COLOR_BGR2RGB))
        mine = [r for r in records if r["image_id"] == image_id]
        assert len(mine) == len(want["scores"]) > 0
        assert {r["file_name"] for r in mine} == {name}
        for r, box, label in zip(mine, want["boxes"].tolist(), want["labels"].tolist()):
            x1, y1, x2, y2 = box
            assert r["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
            assert r["category_id"] == label + 1 and r["category_name"] == NAMES[label]
    # boxes are in original pixels: inside the 90 x 150 image
    assert max(r["bbox"][0] + r["bbox"][2] for r in records if r["image_id"] == 1) <= 90 + 1e-3
    # nothing readable: exit 1 and no JSON
    assert infer_images(predictor, [paths[2]], str(tmp_path / "none"), "c.png") == 1
    assert not os.path.exists(tmp_path / "none" / "detections.json")


def write_video(path, frames=5, size=(64, 48), fps=10.0):
    """A tiny mp4v clip: a red disc moving right over a grey gradient."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.tile(np.linspace(40, 200, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
        cv2.circle(frame, (10 + 8 * i, h // 2), 9, (0, 0, 255), -1)
        cv2.rectangle(frame, (w - 20, 5), (w - 5, 20), (255, 0, 0), -1)
        writer.write(frame)
    writer.release()
    return str(path)


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def test_video_gives_a_drawn_video_and_per_frame_json(predictor, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames=5, size=(64, 48), fps=10.0)
    assert is_video(clip) and not is_video(str(tmp_path / "missing.mp4"))
    out = tmp_path / "out"
    doc = infer_video(predictor, clip, str(out))
    assert sorted(os.listdir(out)) == ["clip.json", "clip.mp4"]  # no temporary file left
    frames, fps = read_video(out / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and fps == pytest.approx(10.0)
    assert json.loads((out / "clip.json").read_text()) == doc
    assert (doc["video"], doc["width"], doc["height"], doc["num_frames"]) == \
        ("clip.avi", 64, 48, 5)
    assert [f["frame"] for f in doc["frames"]] == list(range(5))
    assert doc["frames"][2]["time_s"] == pytest.approx(0.2)
    inputs, _ = read_video(clip)
    for f, bgr in zip(doc["frames"], inputs):
        want = predictor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # the frame, RGB
        assert [r["score"] for r in f["detections"]] == pytest.approx(want["scores"].tolist())
        assert all(r["image_id"] == f["frame"] and r["file_name"] == "clip.avi"
                   for r in f["detections"])
    assert sum(len(f["detections"]) for f in doc["frames"]) > 0
    # batches of frames give the same detections
    again = infer_video(predictor, clip, str(tmp_path / "batched"), batch_size=2)
    assert again == doc


def test_unreadable_videos_are_named(predictor, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoError, match="broken.mp4"):
        infer_video(predictor, str(bad), str(tmp_path / "out"))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty.avi"):
        infer_video(predictor, str(empty), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        infer_video(predictor, str(tmp_path / "gone.mp4"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "broken.mp4")


def test_temp_path_for_replaces_atomically_or_leaves_the_old_file(tmp_path):
    from dcn_det.io.atomic import WriteError, temp_path_for
    target = tmp_path / "out" / "clip.mp4"
    with temp_path_for(str(target), root=str(tmp_path)) as tmp:
        assert tmp.endswith(".mp4") and os.path.dirname(tmp) == str(tmp_path / "out")
        with open(tmp, "wb") as f:
            f.write(b"new video")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"new video" and os.listdir(tmp_path / "out") == ["clip.mp4"]
    with pytest.raises(RuntimeError, match="encoder broke"):
        with temp_path_for(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("encoder broke")
    assert target.read_bytes() == b"new video" and os.listdir(tmp_path / "out") == ["clip.mp4"]
    with pytest.raises(WriteError, match=r"cannot write video clip.mp4 to .*: disk full"):
        with temp_path_for(str(target), what="video"):
            raise OSError(28, "disk full")
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]
