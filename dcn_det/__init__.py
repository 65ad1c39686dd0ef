"""dcn_det: Deformable ConvNets object detection (R-FCN and Faster R-CNN) in PyTorch.

The public API, reachable from the top level::

    import dcn_det
    cfg = dcn_det.load_config("configs/demo/rfcn_dcn_synthetic.yaml", ["solver.max_iter=10"])
    model = dcn_det.build_model(cfg.model)
    det = dcn_det.Predictor("model.pth")("photo.jpg")
    y = dcn_det.deform_conv2d(x, offset, weight)          # the ops (also dcn_det.ops.*)

Every name is imported on first use (PEP 562 ``__getattr__``), so ``import dcn_det`` stays
cheap (no torch, OpenCV or model code) and importing a subpackage such as ``dcn_det.ops`` or
``dcn_det.config`` does not pull in the others.
"""

__version__ = "0.1.0"

# public name -> (module, attribute in it; None = the module itself)
_LAZY = {
    "Predictor": ("dcn_det.predictor", "Predictor"),
    "build_model": ("dcn_det.modeling", "build_model"),
    "load_config": ("dcn_det.config", "load_config"),
    "Config": ("dcn_det.config", "Config"),
    "train": ("dcn_det.engine.trainer", "train"),
    "ops": ("dcn_det.ops", None),
    "deform_conv2d": ("dcn_det.ops", "deform_conv2d"),
    "DeformConv2d": ("dcn_det.ops", "DeformConv2d"),
    "ModulatedDeformConv2d": ("dcn_det.ops", "ModulatedDeformConv2d"),
    "deform_psroi_pool": ("dcn_det.ops", "deform_psroi_pool"),
    "DeformPSRoIPool": ("dcn_det.ops", "DeformPSRoIPool"),
    "deform_max_pool2d": ("dcn_det.ops", "deform_max_pool2d"),
    "DeformMaxPool2d": ("dcn_det.ops", "DeformMaxPool2d"),
    "roi_align": ("dcn_det.ops", "roi_align"),
    "RoIAlign": ("dcn_det.ops", "RoIAlign"),
    "nms": ("dcn_det.ops", "nms"),
    "batched_nms": ("dcn_det.ops", "batched_nms"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dcn_det' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
