"""Running a :class:`dcn_det.Predictor` over files for users (``tools/infer.py``): images and
videos in, drawn images/videos and COCO-style detection JSON out."""
from dcn_det.inference.images import infer_images
from dcn_det.inference.results import detections_to_records
from dcn_det.inference.video import VIDEO_EXTENSIONS, VideoError, infer_video, is_video

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "detections_to_records", "infer_images",
           "infer_video", "is_video"]
