"""tools/convert_weights.py: any format in, a torchvision-format .pth out."""
import importlib.util
import os

import pytest
import torch

from dcn_det.cli import run_main
from dcn_det.weights import load_pretrained
from tests.weights import writers as W

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "convert_weights", os.path.join(ROOT, "tools", "convert_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converts_mxnet_and_detectron2_to_loadable_pth(tmp_path, capsys):
    tool = _tool()
    ref = W.reference(W.dcn_resnet101())
    W.write_params(tmp_path / "rfcn_dcn.params", W.mxnet_params(ref))
    assert tool.main(["--input", str(tmp_path / "rfcn_dcn.params"),
                      "--output", str(tmp_path / "out.pth")]) == 0
    out = capsys.readouterr().out
    assert "as mxnet" in out and "stride_in_1x1: true" in out and "123.15" in out
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert sorted(saved["state_dict"]) == sorted(ref)
    assert saved["dcn_det_weights"] == {"format": "mxnet", "stride_in_1x1": True,
                                        "pixel_mean": [123.15, 115.90, 103.06],
                                        "pixel_std": [1.0, 1.0, 1.0], "flipped_bgr": False}
    model = W.dcn_resnet101()
    report = load_pretrained(model, str(tmp_path / "out.pth"))
    assert report.format == "torchvision" and report.filled == report.fillable
    assert report.pixel_mean == (123.15, 115.90, 103.06)  # the original's, not ImageNet's
    assert torch.equal(model.layer4[2].conv2.conv_offset.weight,
                       ref["layer4.2.conv2.conv_offset.weight"])

    W.write_pickle(tmp_path / "R-101.pkl", {"blobs": W.caffe2_blobs(ref)})
    assert tool.main(["--input", str(tmp_path / "R-101.pkl"), "--output",
                      str(tmp_path / "r101.pth"), "--depth", "101"]) == 0
    assert "BGR to RGB" in capsys.readouterr().out
    saved = torch.load(tmp_path / "r101.pth", weights_only=True)
    assert torch.equal(saved["state_dict"]["conv1.weight"], ref["conv1.weight"])
    assert saved["dcn_det_weights"]["flipped_bgr"] is True


def test_wrong_format_or_depth_exits_2(tmp_path, capsys):
    tool = _tool()
    ref = W.reference(W.tiny_resnet101())
    r50 = {k: v for k, v in W.mxnet_params(ref).items()
           if not any(f"4b{i}_" in k for i in range(6, 23))}
    W.write_params(tmp_path / "r50.params", r50)
    assert tool.main(["--input", str(tmp_path / "r50.params"),
                      "--output", str(tmp_path / "o.pth")]) == 0  # depth 50 from the file
    code = run_main(lambda: tool.main(["--input", str(tmp_path / "r50.params"),
                                            "--output", str(tmp_path / "o1.pth"),
                                            "--depth", "101", "--min-fill", "0.9"]))
    assert code == 2
    assert "a ResNet-101's tensors" in capsys.readouterr().err
    torch.save(W.mmdet_checkpoint(ref), tmp_path / "det.pth")
    code = run_main(lambda: tool.main(["--input", str(tmp_path / "det.pth"), "--output",
                                            str(tmp_path / "o2.pth"), "--format",
                                            "torchvision", "--depth", "101"]))
    assert code == 2
    assert "filled 0 of" in capsys.readouterr().err
    assert not (tmp_path / "o2.pth").exists()
    with pytest.raises(SystemExit):
        tool.main(["--input", "x", "--output", "y", "--format", "caffe"])


def test_converts_a_whole_mxnet_detector_for_model_weights(tmp_path, capsys):
    from dcn_det.weights import detect_detector_format, load_detector_weights
    from tests.weights.detectors import FASTER_COCO, detector
    tool = _tool()
    _, model = detector(*FASTER_COCO)
    ref = W.detector_reference(model, seed=6)
    W.write_params(tmp_path / "rcnn_dcn_coco-0000.params", W.mxnet_rcnn_dcn(ref))
    assert tool.main(["--detector", "--input", str(tmp_path / "rcnn_dcn_coco-0000.params"),
                      "--output", str(tmp_path / "det.pth")]) == 0
    out = capsys.readouterr().out
    assert "as mxnet" in out and "80 classes" in out and "background box slot" in out
    saved = torch.load(tmp_path / "det.pth", weights_only=True)
    assert sorted(saved["model"]) == sorted(ref)
    assert saved["dcn_det_weights"]["num_classes"] == 80
    assert detect_detector_format(str(tmp_path / "det.pth")) == "dcn_det"
    _, target = detector(*FASTER_COCO, seed=2)
    report = load_detector_weights(target, str(tmp_path / "det.pth"))
    assert report.filled == report.fillable and report.file_num_classes == 80
    assert report.pixel_mean == (123.15, 115.90, 103.06)
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
    with pytest.raises(SystemExit):
        tool.main(["--detector", "--input", "x", "--output", "y", "--format", "torchvision"])
    with pytest.raises(SystemExit):
        tool.main(["--input", "x", "--output", "y", "--format", "dcn_det"])
    code = run_main(lambda: tool.main(["--detector", "--input", str(tmp_path / "det.pth"),
                                            "--output", str(tmp_path / "o.pth"), "--format",
                                            "mxnet"]))
    assert code == 2 and "det.pth" in capsys.readouterr().err
