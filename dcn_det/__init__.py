"""dcn_det: Deformable ConvNets object detection (R-FCN and Faster R-CNN) in PyTorch."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import dcn_det.ops` (or the config tools) does not pull in OpenCV and the
    # model code just to make `dcn_det.Predictor` reachable.
    if name == "Predictor":
        from dcn_det.predictor import Predictor
        return Predictor
    raise AttributeError(f"module 'dcn_det' has no attribute {name!r}")
