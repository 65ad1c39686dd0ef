"""model.weights from the official MXNet Deformable ConvNets detectors: every tensor mapped,
the background class moved last, the RPN objectness in either form."""
import logging

import pytest
import torch

from dcn_det.weights import (FillError, WeightsError, detect_detector_format,
                             load_detector_weights)
from tests.weights import writers as W
from tests.weights.detectors import FASTER_COCO, RFCN_COCO, detector, snapshot

H = W.HEAD


def _exact(model, ref, keys):
    state = model.state_dict()
    for key in keys:
        torch.testing.assert_close(state[key], ref[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def rfcn():
    """(cfg, ResNet-101 R-FCN DCN for 80 classes, its reference values)."""
    cfg, model = detector(*RFCN_COCO)
    return cfg, model, W.detector_reference(model, seed=7)


def test_official_rfcn_dcn_params_fill_every_tensor(tmp_path, rfcn):
    cfg, model, ref = rfcn
    arrays = W.mxnet_rfcn_dcn(ref)
    names = {k.split(":", 1)[1] for k in arrays}
    assert {"rpn_conv_3x3_weight", "rpn_cls_score_bias", "rpn_bbox_pred_weight",
            "conv_new_1_weight", "rfcn_cls_weight", "rfcn_bbox_bias",
            "rfcn_cls_offset_t_weight", "rfcn_bbox_offset_t_bias", "rfcn_bbox_weight_test",
            "res5c_branch2b_offset_weight", "res4b22_branch2c_weight",
            "bn4b22_branch2c_moving_var"} <= names
    W.write_params(tmp_path / "rfcn_dcn_coco-0000.params", arrays)
    path = str(tmp_path / "rfcn_dcn_coco-0000.params")
    assert detect_detector_format(path) == "mxnet"
    report = load_detector_weights(model, path)
    assert report.format == "mxnet" and report.file_num_classes == 80
    assert report.missing == [] and report.expected_missing == [] and report.unexpected == []
    assert report.not_mapped == [] and report.reinitialised == []
    assert sorted(report.ignored) == ["arg:rfcn_bbox_bias_test", "arg:rfcn_bbox_weight_test"]
    assert report.filled == report.fillable == len(ref)
    _exact(model, ref, ref)
    # hand-checked: our class 0 is the file's block 1, our background (80) the file's block 0
    gg = 49
    w = torch.from_numpy(arrays["arg:rfcn_cls_weight"])
    state = model.state_dict()
    assert torch.equal(state[H + "rfcn_cls.weight"][:gg], w[gg:2 * gg])
    assert torch.equal(state[H + "rfcn_cls.weight"][80 * gg:], w[:gg])
    # class-agnostic boxes: our slot 0 (foreground) is the official slot 1
    b = torch.from_numpy(arrays["arg:rfcn_bbox_bias"])
    assert torch.equal(state[H + "rfcn_bbox.bias"][:4 * gg], b[4 * gg:])
    assert torch.equal(state[H + "cls_offset.bias"][:2 * gg], torch.from_numpy(
        arrays["arg:rfcn_cls_offset_t_bias"])[2 * gg:4 * gg])


def test_only_test_copies_are_divided_back(tmp_path, rfcn):
    cfg, model, ref = rfcn
    W.write_params(tmp_path / "t.params", W.mxnet_rfcn_dcn(ref, only_test_copies=True))
    _, target = detector(*RFCN_COCO, seed=3)
    report = load_detector_weights(target, str(tmp_path / "t.params"))
    assert report.filled == report.fillable
    assert any("test copy" in n for n in report.notes)
    state = target.state_dict()
    for f in ("weight", "bias"):  # x std / std: equal up to float rounding
        torch.testing.assert_close(state[f"{H}rfcn_bbox.{f}"], ref[f"{H}rfcn_bbox.{f}"],
                                   rtol=1e-6, atol=1e-7)


def test_softmax_rpn_into_sigmoid_rpn_scores_the_same(tmp_path, rfcn):
    cfg, model, ref = rfcn
    W.write_params(tmp_path / "r.params", W.mxnet_rfcn_dcn(ref))
    _, sigmoid = detector(*RFCN_COCO, "model.rpn.objectness=sigmoid", seed=2)
    report = load_detector_weights(sigmoid, str(tmp_path / "r.params"))
    assert report.filled == report.fillable
    assert any("rpn.head.cls_logits.weight: RPN objectness converted from softmax" in n
               for n in report.notes)
    model.load_state_dict(ref, strict=False)
    feature = torch.randn(1, model.rpn.head.conv.in_channels, 5, 6)
    with torch.no_grad():
        soft, deltas_soft = model.rpn.head(feature)
        sig, deltas_sig = sigmoid.rpn.head(feature)
    torch.testing.assert_close(sig, soft, rtol=1e-5, atol=1e-5)
    assert torch.equal(deltas_sig, deltas_soft)


def test_other_class_count_reinitialises_and_warns(tmp_path, rfcn, caplog):
    cfg, model, ref = rfcn
    W.write_params(tmp_path / "coco.params", W.mxnet_rfcn_dcn(ref))
    overrides = [o for o in RFCN_COCO if "num_classes" not in o] + ["model.num_classes=5"]
    _, voc5 = detector(*overrides, seed=4)
    fresh = snapshot(voc5)
    with caplog.at_level(logging.WARNING, logger="dcn_det.weights"):
        report = load_detector_weights(voc5, str(tmp_path / "coco.params"))
    assert sorted({k.rsplit(".", 1)[0] for k in report.reinitialised}) == \
        [H + "cls_offset", H + "rfcn_cls"]
    assert "has 80 classes, the model 5" in caplog.text
    state = voc5.state_dict()
    assert torch.equal(state[H + "rfcn_cls.weight"], fresh[H + "rfcn_cls.weight"])
    _exact(voc5, ref, [k for k in ref if k not in report.reinitialised])


def test_bad_class_block_is_refused_naming_the_tensor(tmp_path, rfcn):
    _, _, ref = rfcn
    arrays = W.mxnet_rfcn_dcn(ref)
    arrays["arg:rfcn_cls_weight"] = arrays["arg:rfcn_cls_weight"][:-3]
    W.write_params(tmp_path / "bad.params", arrays)
    with pytest.raises(WeightsError, match=r"bad\.params.*arg:rfcn_cls_weight has 3966 output "
                                           r"rows, not a multiple of the 49"):
        load_detector_weights(detector(*RFCN_COCO)[1], str(tmp_path / "bad.params"))


@pytest.mark.parametrize("agnostic", [True, False])
def test_official_faster_rcnn_dcn_params(tmp_path, agnostic):
    overrides = FASTER_COCO + (f"model.head.class_agnostic_bbox={str(agnostic).lower()}",)
    _, model = detector(*overrides)
    ref = W.detector_reference(model, seed=8)
    arrays = W.mxnet_rcnn_dcn(ref)
    assert arrays["arg:bbox_pred_weight"].shape[0] == (8 if agnostic else 4 * 81)
    assert {"arg:offset_weight", "arg:fc_new_1_bias", "arg:fc_new_2_weight",
            "arg:cls_score_bias"} <= set(arrays)
    W.write_params(tmp_path / "fpn.params", arrays)
    report = load_detector_weights(model, str(tmp_path / "fpn.params"))
    assert report.missing == [] and report.unexpected == [] and report.not_mapped == []
    assert report.filled == report.fillable and report.file_num_classes == 80
    _exact(model, ref, ref)
    # the background row moved last, the background box slot left out
    state = model.state_dict()
    assert torch.equal(state[H + "cls_score.bias"][80],
                       torch.from_numpy(arrays["arg:cls_score_bias"])[0])
    assert torch.equal(state[H + "bbox_pred.bias"],
                       torch.from_numpy(arrays["arg:bbox_pred_bias"])[4:])

    W.write_params(tmp_path / "t.params", W.mxnet_rcnn_dcn(ref, only_test_copies=True))
    _, target = detector(*overrides, seed=5)
    load_detector_weights(target, str(tmp_path / "t.params"))
    torch.testing.assert_close(target.state_dict()[H + "bbox_pred.weight"],
                               ref[H + "bbox_pred.weight"], rtol=1e-6, atol=1e-7)


def test_rfcn_file_into_faster_rcnn_model_fails_the_fill_check(tmp_path, rfcn):
    _, _, ref = rfcn
    W.write_params(tmp_path / "rfcn.params", W.mxnet_rfcn_dcn(ref))
    _, faster = detector(*FASTER_COCO, "model.head.conv_channels=64")  # conv_new fits
    report = load_detector_weights(faster, str(tmp_path / "rfcn.params"), min_fill=0.5)
    assert sorted(report.unexpected) == sorted(
        k for k in ref if k.startswith(H) and not k.startswith(H + "conv_new"))
    assert {H + "fc1.weight", H + "cls_score.weight"} <= set(report.missing)
    assert 0.5 < report.fill_fraction < 1.0
    with pytest.raises(FillError, match="model.weights_min_fill"):
        load_detector_weights(faster, str(tmp_path / "rfcn.params"), min_fill=1.0)


def test_imagenet_backbone_params_are_refused_as_a_detector(tmp_path, rfcn):
    _, model, ref = rfcn
    backbone = {k[len("backbone."):]: v for k, v in ref.items() if k.startswith("backbone.")}
    W.write_params(tmp_path / "resnet_v1_101-0000.params",
                   W.mxnet_params(backbone, with_head=False))
    with pytest.raises(WeightsError, match=r"resnet_v1_101-0000\.params.*without any RPN or "
                                           r"box-head tensor.*model\.backbone\.pretrained"):
        load_detector_weights(model, str(tmp_path / "resnet_v1_101-0000.params"))
