"""A file of the wrong format or network fails loudly instead of training from random weights."""
import logging
import os

import numpy as np
import pytest
import torch

from dcn_det.config.schema import BackboneConfig
from dcn_det.modeling.backbone import build_backbone
from dcn_det.weights import FillError, WeightsError, load_pretrained
from tests.weights import writers as W

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mmdet_checkpoint_read_as_torchvision_fails_the_fill_check(tmp_path):
    model = W.dcn_resnet101(stride_in_1x1=False)
    torch.save(W.mmdet_checkpoint(W.reference(model)), tmp_path / "mmdet.pth")
    before = model.conv1.weight.detach().clone()
    with pytest.raises(FillError, match=r"mmdet\.pth.*'torchvision' filled 0 of \d+ .*"
                                        r"under the minimum 50%.*backbone\.conv1\.weight"):
        load_pretrained(model, str(tmp_path / "mmdet.pth"), format="torchvision")
    assert torch.equal(model.conv1.weight, before)  # nothing loaded


def test_foreign_pickle_fails_the_fill_check(tmp_path):
    W.write_pickle(tmp_path / "other.pkl",
                   {"model": {"encoder.layers.0.weight": np.zeros((4, 4), np.float32)}})
    with pytest.raises(FillError, match=r"other\.pkl.*'detectron2' filled 0 of"):
        load_pretrained(W.tiny_resnet101(), str(tmp_path / "other.pkl"))


def test_resnet50_file_into_resnet101_partially_fills_and_threshold_decides(tmp_path):
    model = W.tiny_resnet101()
    ref = W.reference(model)
    # A ResNet-50's worth: res4 blocks 0..5 only.
    r50 = {k: v for k, v in W.mxnet_params(ref, with_head=False).items()
           if not any(f"4b{i}_" in k for i in range(6, 23))}
    W.write_params(tmp_path / "r50.params", r50)
    report = load_pretrained(model, str(tmp_path / "r50.params"), min_fill=0.5)
    assert 0.5 < report.fill_fraction < 1.0 and len(report.missing) == 17 * 15
    with pytest.raises(FillError, match=r"r50\.params.*'mxnet'.*under the minimum 90%"):
        load_pretrained(W.tiny_resnet101(), str(tmp_path / "r50.params"), min_fill=0.9)


def test_shape_mismatch_is_an_error_naming_key_and_shapes(tmp_path):
    ref = W.reference(W.tiny_resnet101(width_mult=0.25))
    W.write_params(tmp_path / "wide.params", W.mxnet_params(ref, with_offsets=False))
    with pytest.raises(WeightsError, match=r"wide\.params.*conv1\.weight: file has "
                                           r"\(16, 3, 7, 7\), model needs \(8, 3, 7, 7\)"):
        load_pretrained(W.tiny_resnet101(), str(tmp_path / "wide.params"))


def _cfg(path, **kw):
    return BackboneConfig(depth=101, width_mult=0.125, freeze_at=2, res5_dilation=2,
                          deform_stages=("res5",), deform_offset_groups=4,
                          pretrained=str(path), **kw)


def test_build_backbone_reads_every_format_and_checks_pixel_stats(tmp_path, caplog):
    ref = W.reference(W.dcn_resnet101())
    W.write_params(tmp_path / "rfcn.params", W.mxnet_params(ref))
    with caplog.at_level(logging.WARNING, logger="dcn_det.weights"):
        model = build_backbone(_cfg(tmp_path / "rfcn.params"),
                               pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.4, 57.1, 57.4))
    assert torch.equal(model.layer4[0].conv2.conv_offset.weight,
                       ref["layer4.0.conv2.conv_offset.weight"])
    assert "model.pixel_mean is" in caplog.text and "[123.15, 115.9, 103.06]" in caplog.text
    assert "model.pixel_std is" in caplog.text
    with pytest.raises(WeightsError, match=r"could not read .*rfcn\.params"):
        build_backbone(_cfg(tmp_path / "rfcn.params", pretrained_format="torchvision"))
    W.write_params(tmp_path / "partial.params",
                   {k: v for k, v in W.mxnet_params(ref).items() if "res4" not in k
                    and "bn4" not in k})
    with pytest.raises(FillError):
        build_backbone(_cfg(tmp_path / "partial.params"))
    model = build_backbone(_cfg(tmp_path / "partial.params", pretrained_min_fill=0.2))
    assert torch.equal(model.conv1.weight, ref["conv1.weight"])


def test_config_fields_are_validated():
    from dcn_det.config import ConfigError, load_config
    path = os.path.join(ROOT, "configs", "rfcn", "rfcn_r101_dcn_coco.yaml")
    cfg = load_config(path, ["model.backbone.pretrained_format=mxnet",
                             "model.backbone.pretrained_min_fill=0.9"])
    assert cfg.model.backbone.pretrained_format == "mxnet"
    assert cfg.model.backbone.pretrained_min_fill == 0.9
    assert BackboneConfig().pretrained_format == "auto"
    assert BackboneConfig().pretrained_min_fill == 0.5
    with pytest.raises(ConfigError, match="pretrained_format"):
        load_config(path, ["model.backbone.pretrained_format=caffe"])
    with pytest.raises(ConfigError, match="pretrained_min_fill"):
        load_config(path, ["model.backbone.pretrained_min_fill=1.5"])
