"""model.weights from an mmdetection C4 Faster R-CNN checkpoint: backbone with the shared-head
res5, the sigmoid RPN, the caffe-style BGR stem; its box head explained, not loaded."""
import logging

import pytest
import torch

from dcn_det.weights import WeightsError, detect_detector_format, load_detector_weights
from tests.weights import writers as W
from tests.weights.detectors import detector, snapshot

# ResNet-50 C4 Faster R-CNN: caffe style, 15 anchors (scales 2..32), a softmax RPN here, so the
# file's sigmoid objectness is converted.
C4 = ("model.backbone.depth=50", "model.backbone.norm=frozen_bn", "model.backbone.deform_stages=[]",
      "model.num_classes=80", "model.head.type=fast_rcnn", "model.head.pooler=roi_align",
      "model.head.conv_channels=16", "model.head.fc_dim=32", "model.rpn.conv_channels=128",
      "model.rpn.anchor_scales=[2,4,8,16,32]", "model.pixel_mean=[123.675,116.28,103.53]",
      "model.pixel_std=[1,1,1]")


def test_mmdet_c4_detector_maps_backbone_res5_and_rpn(tmp_path, caplog):
    cfg, model = detector(*C4)
    ref = W.detector_reference(model, seed=9)
    torch.save(W.mmdet_c4_checkpoint(ref), tmp_path / "faster_rcnn_r50_caffe_c4.pth")
    path = str(tmp_path / "faster_rcnn_r50_caffe_c4.pth")
    assert detect_detector_format(path) == "mmdet"
    fresh = snapshot(model)
    with caplog.at_level(logging.WARNING, logger="dcn_det.weights"):
        report = load_detector_weights(model, path, pixel_mean=cfg.model.pixel_mean,
                                       pixel_std=cfg.model.pixel_std)
    assert report.format == "mmdet" and report.flipped_bgr and report.file_num_classes == 80
    assert report.pixel_mean == (123.675, 116.28, 103.53) and report.pixel_std == (1, 1, 1)
    assert "pixel_mean" not in caplog.text  # the model's settings match the file's
    head = [k for k in ref if k.startswith(W.HEAD)]
    backbone_rpn = [k for k in ref if k not in head and not k.startswith("rpn.head.cls_logits")]
    state = model.state_dict()
    for key in backbone_rpn:  # the stem flipped back to RGB, res5 from the shared head
        torch.testing.assert_close(state[key], ref[key], rtol=0, atol=0, msg=key)
    # sigmoid logit w -> the softmax pair (0, w): softmax(0, w)[1] = sigmoid(w)
    a = 15
    w = ref["rpn.head.cls_logits.weight"][a:] - ref["rpn.head.cls_logits.weight"][:a]
    assert not state["rpn.head.cls_logits.weight"][:a].any()
    torch.testing.assert_close(state["rpn.head.cls_logits.weight"][a:], w, rtol=0, atol=0)
    # every model tensor is filled or explained: the box head has no counterpart
    assert sorted(report.missing) == sorted(head)
    assert all(torch.equal(state[k], fresh[k]) for k in head)
    assert report.unexpected == [] and report.reinitialised == []
    assert sorted(report.not_mapped) == ["roi_head.bbox_head.fc_cls.bias",
                                         "roi_head.bbox_head.fc_cls.weight",
                                         "roi_head.bbox_head.fc_reg.bias",
                                         "roi_head.bbox_head.fc_reg.weight"]
    assert len(report.ignored) == sum(k.endswith("num_batches_tracked") for k in
                                      W.mmdet_c4_checkpoint(ref)["state_dict"])
    assert any("no counterpart" in n for n in report.notes)
    assert any("cell corner" in n for n in report.notes)
    assert report.filled == report.fillable - len(head)


def test_mmdet_without_config_text_is_not_flipped_and_says_so(tmp_path):
    _, model = detector(*C4)
    ref = W.detector_reference(model, seed=9)
    torch.save(W.mmdet_c4_checkpoint(ref, config_text=None), tmp_path / "c4.pth")
    report = load_detector_weights(model, str(tmp_path / "c4.pth"))
    assert not report.flipped_bgr and report.pixel_mean is None
    assert any("unknown" in n for n in report.notes)
    assert torch.equal(model.state_dict()["backbone.conv1.weight"],
                       ref["backbone.conv1.weight"].flip(1))  # as stored


def test_mmdet_softmax_rpn_is_refused_naming_the_tensor(tmp_path):
    _, model = detector(*C4)
    ref = W.detector_reference(model)
    torch.save(W.mmdet_c4_checkpoint(ref, softmax_rpn=True), tmp_path / "soft.pth")
    with pytest.raises(WeightsError, match=r"soft\.pth.*rpn_head\.rpn_cls\.weight has 2 "
                                           r"channels per anchor"):
        load_detector_weights(model, str(tmp_path / "soft.pth"))
