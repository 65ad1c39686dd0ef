"""A video in, a drawn video and per-frame detections out (``tools/infer.py --input clip.mp4``).

Frames are read with ``cv2.VideoCapture`` (BGR, passed to the Predictor with
``format="BGR"``) and written with ``cv2.VideoWriter`` (``mp4v``) at the input's frame rate
and size, so frame ``i`` of the output is frame ``i`` of the input with its detections drawn.
"""
import logging
import math
import os
from typing import Any, Dict, Iterator, List

import cv2

from dcn_det.inference.results import detections_to_records
from dcn_det.io.atomic import temp_path_for, write_json
from dcn_det.visualization import draw_detections

logger = logging.getLogger("dcn_det")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FALLBACK_FPS = 25.0  # for files that state no usable frame rate


class VideoError(ValueError):
    """A video that cannot be opened or decoded, or an output video that cannot be encoded;
    the message names the file."""


def is_video(path: str) -> bool:
    """True for an existing file with a video extension (``VIDEO_EXTENSIONS``)."""
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def infer_video(predictor, path: str, output_dir: str, batch_size: int = 1) -> Dict[str, Any]:
    """Detects objects in every frame of ``path``; writes the drawn video and the JSON.

    Writes ``output_dir/<stem>.mp4`` (mp4v; the input's fps, width and height; frame ``i``
    drawn) and ``output_dir/<stem>.json``::

        {"video": "clip.mp4", "fps": 25.0, "width": 640, "height": 360, "num_frames": N,
         "frames": [{"frame": 0, "time_s": 0.0, "detections": [records]}, ...]}

    with one entry per frame (an empty list where nothing was found); the records are those
    of :mod:`dcn_det.inference.results` with ``image_id`` = the frame index and ``file_name``
    the video's name. Both files are replaced atomically at the end.

    Args:
        predictor: a :class:`dcn_det.Predictor`.
        path: the video file.
        output_dir: where the outputs go (created).
        batch_size: frames per forward (the frames share one size, so a batch gives the
            one-by-one detections).

    Returns:
        The JSON document (without writing it twice).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoError: OpenCV cannot open the file or decode its first frame (corrupt,
            truncated, not a video, an unsupported codec), or cannot encode the output.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoError(f"cannot open video {path!r}: OpenCV could not read it (corrupt, "
                             "truncated, not a video, or a codec this OpenCV lacks)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"video {path!r} has no decodable frame (corrupt or truncated)")
        height, width = frame.shape[:2]
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(fps) and fps > 0):
            logger.warning("%s states no frame rate (%r); writing %g fps", path, fps,
                           FALLBACK_FPS)
            fps = FALLBACK_FPS
        stated = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        name = os.path.basename(path)
        stem = os.path.splitext(name)[0]
        video_out = os.path.join(output_dir, stem + ".mp4")
        frames: List[Dict[str, Any]] = []
        with temp_path_for(video_out, root=output_dir, what="video") as tmp:
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not writer.isOpened():
                raise VideoError(f"cannot encode {video_out!r}: OpenCV has no mp4v encoder here")
            try:
                batch = []
                for frame in _frames(cap, frame):
                    batch.append(frame)
                    if len(batch) == batch_size:
                        _detect_and_draw(predictor, batch, frames, writer, fps, name)
                        batch = []
                if batch:
                    _detect_and_draw(predictor, batch, frames, writer, fps, name)
            finally:
                writer.release()
    finally:
        cap.release()
    if stated > len(frames):
        logger.warning("%s states %d frames but only %d could be decoded (truncated?)", path,
                       stated, len(frames))
    doc = {"video": os.path.basename(path), "fps": float(fps), "width": int(width),
           "height": int(height), "num_frames": len(frames), "frames": frames}
    write_json(os.path.join(output_dir, stem + ".json"), doc, root=output_dir,
               what="detections")
    n = sum(len(f["detections"]) for f in frames)
    print(f"{path}: {len(frames)} frames, {n} detections -> {video_out}, "
          f"{os.path.join(output_dir, stem + '.json')}")
    return doc


def _frames(cap, first) -> Iterator[Any]:
    """The first frame, then every frame the capture still decodes."""
    yield first
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield frame


def _detect_and_draw(predictor, batch, frames: List[Dict[str, Any]], writer, fps: float,
                     file_name: str) -> None:
    """Runs one batch of BGR frames, appends their JSON entries, writes the drawn frames."""
    dets = predictor(batch, format="BGR")
    for bgr, det in zip(batch, dets):
        index = len(frames)
        frames.append({"frame": index, "time_s": index / fps,
                       "detections": detections_to_records(det, index, file_name,
                                                           predictor.class_names)})
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        drawn = draw_detections(rgb, det["boxes"], det["scores"], det["labels"],
                                predictor.class_names)
        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
