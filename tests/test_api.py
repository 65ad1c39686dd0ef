"""The top-level API of dcn_det: every public name resolves lazily to the real object."""
import importlib
import os
import subprocess
import sys

import pytest

import dcn_det

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ["deform_conv2d", "DeformConv2d", "ModulatedDeformConv2d", "deform_psroi_pool",
       "DeformPSRoIPool", "deform_max_pool2d", "DeformMaxPool2d", "roi_align", "RoIAlign",
       "nms", "batched_nms"]


def test_public_names_are_the_real_objects():
    import dcn_det.ops
    from dcn_det.config import Config, load_config
    from dcn_det.engine.trainer import train
    from dcn_det.modeling import build_model
    from dcn_det.predictor import Predictor

    assert set(dcn_det.__all__) == {"__version__", "Predictor", "build_model", "load_config",
                                    "Config", "train", "ops", *OPS}
    assert dcn_det.Predictor is Predictor and dcn_det.build_model is build_model
    assert dcn_det.load_config is load_config and dcn_det.Config is Config
    assert dcn_det.train is train
    assert dcn_det.ops is importlib.import_module("dcn_det.ops")
    for name in OPS:
        assert getattr(dcn_det, name) is getattr(dcn_det.ops, name), name
    assert set(dcn_det.__all__) <= set(dir(dcn_det))
    from dcn_det import DeformConv2d, deform_conv2d  # noqa: F401 - from-imports work too


def test_the_api_works_end_to_end_on_a_tiny_op():
    import torch
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    w = torch.rand(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 3, 3, dtype=torch.float64)
    # zero offsets: a plain convolution
    torch.testing.assert_close(dcn_det.deform_conv2d(x, offset, w),
                               torch.nn.functional.conv2d(x, w))


def test_unknown_names_fail_clearly():
    with pytest.raises(AttributeError, match="module 'dcn_det' has no attribute 'Predicter'"):
        dcn_det.Predicter  # noqa: B018


@pytest.mark.slow  # a fresh interpreter
def test_import_dcn_det_is_cheap():
    code = ("import sys, dcn_det; heavy = [m for m in ('torch', 'cv2', 'dcn_det.modeling', "
            "'dcn_det.ops') if m in sys.modules]; print(heavy); "
            "from dcn_det import load_config; print('dcn_det.config' in sys.modules, "
            "'dcn_det.modeling' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True False"]
