"""Every format's full ResNet-101 key set fills every backbone tensor, with values in place."""
import torch

from dcn_det.weights import detect_format, load_pretrained, read_weights
from tests.weights import writers as W


def _assert_equal(model, ref, keys):
    state = model.state_dict()
    for key in keys:
        torch.testing.assert_close(state[key], ref[key], rtol=0, atol=0, msg=key)


def _offset_keys(model):
    return sorted(k for k in model.state_dict() if ".conv_offset." in k)


def test_torchvision_r101_fills_everything(tmp_path):
    model = W.tiny_resnet101(stride_in_1x1=False)
    ref = W.reference(model)
    torch.save(W.torchvision_state(ref), tmp_path / "r101.pth")
    assert detect_format(str(tmp_path / "r101.pth")) == "torchvision"
    report = load_pretrained(model, str(tmp_path / "r101.pth"))
    assert report.format == "torchvision"
    assert report.missing == [] and report.unexpected == [] and report.expected_missing == []
    assert report.filled == report.fillable == len(ref)
    assert report.fill_fraction == 1.0
    _assert_equal(model, ref, ref)


def test_mmdet_dcn_r101_detector_fills_backbone_and_offsets(tmp_path):
    model = W.dcn_resnet101(stride_in_1x1=False)
    ref = W.reference(model, seed=1)
    torch.save(W.mmdet_checkpoint(ref), tmp_path / "rfcn_dcn_r101.pth")
    assert detect_format(str(tmp_path / "rfcn_dcn_r101.pth")) == "mmdet"
    report = load_pretrained(model, str(tmp_path / "rfcn_dcn_r101.pth"))
    assert report.format == "mmdet"
    assert report.missing == [] and report.unexpected == [] and report.expected_missing == []
    assert sorted(report.loaded) == sorted(ref)
    assert sorted(report.not_mapped) == ["roi_head.bbox_head.fc_cls.weight",
                                         "rpn_head.rpn_cls.weight", "rpn_head.rpn_conv.weight"]
    _assert_equal(model, ref, ref)
    offsets = _offset_keys(model)
    assert len(offsets) == 6  # res5a/b/c: weight and bias
    assert model.layer4[2].conv2.conv_offset.weight.abs().sum() > 0


def test_mmdet_offsets_of_other_groups_are_reported_not_loaded(tmp_path):
    file_model = W.dcn_resnet101(stride_in_1x1=False)  # 4 offset groups
    ref = W.reference(file_model)
    torch.save(W.mmdet_checkpoint(ref), tmp_path / "g4.pth")
    model = W.tiny_resnet101(stride_in_1x1=False, deform_stages=["res5"], deform_offset_groups=1)
    report = load_pretrained(model, str(tmp_path / "g4.pth"))
    assert len(report.offset_mismatch) == 6
    assert "layer4.0.conv2.conv_offset.weight: file has (72, 64, 3, 3), model needs " \
           "(18, 64, 3, 3)" in report.offset_mismatch
    assert sorted(report.expected_missing) == _offset_keys(model)
    assert not model.layer4[0].conv2.conv_offset.weight.any()


def test_detectron_caffe2_r101_folds_bn_and_flips_bgr(tmp_path):
    model = W.tiny_resnet101()
    ref = W.reference(model, seed=2)
    blobs = W.caffe2_blobs(ref)
    assert {"res4_22_branch2c_w", "res3_3_branch2a_bn_s", "res2_0_branch1_bn_b"} <= set(blobs)
    W.write_pickle(tmp_path / "R-101.pkl", {"blobs": blobs})
    report = load_pretrained(model, str(tmp_path / "R-101.pkl"))
    assert report.format == "detectron2" and report.flipped_bgr
    assert report.missing == [] and report.unexpected == [] and report.not_mapped == []
    assert report.filled == report.fillable == len(ref)
    assert "conv1_b" in report.ignored and "pred_w" in report.ignored
    assert "res2_0_branch2a_w_momentum" in report.ignored
    state = model.state_dict()
    # conv1 was stored BGR: after the flip it equals the RGB reference.
    torch.testing.assert_close(state["conv1.weight"], ref["conv1.weight"], rtol=0, atol=0)
    # Caffe2 scale/shift -> weight/bias with mean 0 and var 1.
    for bn in ("bn1", "layer3.22.bn3", "layer1.0.downsample.1", "layer4.2.bn2"):
        torch.testing.assert_close(state[f"{bn}.weight"], ref[f"{bn}.weight"], rtol=0, atol=0)
        torch.testing.assert_close(state[f"{bn}.bias"], ref[f"{bn}.bias"], rtol=0, atol=0)
        assert not state[f"{bn}.running_mean"].any()
        assert torch.equal(state[f"{bn}.running_var"], torch.ones_like(ref[f"{bn}.running_var"]))
    convs = [k for k in ref if k.endswith(".weight") and ref[k].dim() == 4 and k != "conv1.weight"]
    _assert_equal(model, ref, convs)
    # The converted FrozenBN is the Caffe2 affine channel map (up to eps = 1e-5).
    x = torch.randn(2, state["layer2.1.bn2.weight"].shape[0], 3, 3)
    expected = x * ref["layer2.1.bn2.weight"].view(1, -1, 1, 1) + \
        ref["layer2.1.bn2.bias"].view(1, -1, 1, 1)
    torch.testing.assert_close(model.layer2[1].bn2(x), expected, rtol=1e-4, atol=1e-4)


def test_detectron2_dcn_model_fills_everything_with_offsets(tmp_path):
    model = W.dcn_resnet101()
    ref = W.reference(model, seed=3)
    W.write_pickle(tmp_path / "model_final.pkl",
                   {"model": W.d2_model(ref), "__author__": "Detectron2 Model Zoo"}, protocol=4)
    report = load_pretrained(model, str(tmp_path / "model_final.pkl"))
    assert report.format == "detectron2" and report.flipped_bgr
    assert report.missing == [] and report.unexpected == [] and report.expected_missing == []
    assert sorted(report.loaded) == sorted(ref)
    assert len(report.not_mapped) == 3
    _assert_equal(model, ref, ref)  # conv1 flipped back to RGB; offsets in place
    torch.testing.assert_close(model.layer4[1].conv2.conv_offset.bias.detach(),
                               ref["layer4.1.conv2.conv_offset.bias"], rtol=0, atol=0)


def test_detectron2_torchvision_converted_file_keeps_rgb(tmp_path):
    model = W.tiny_resnet101(stride_in_1x1=False)
    ref = W.reference(model, seed=4)
    d2 = {W.d2_name(k): v.numpy() for k, v in ref.items()}  # no prefix, RGB as torchvision
    W.write_pickle(tmp_path / "R-101.pkl", {"model": d2, "__author__": "torchvision",
                                            "matching_heuristics": True})
    source = read_weights(str(tmp_path / "R-101.pkl"))
    assert not source.flipped_bgr and source.stride_in_1x1 is False
    report = load_pretrained(model, str(tmp_path / "R-101.pkl"))
    assert report.filled == report.fillable
    _assert_equal(model, ref, ref)


def test_official_mxnet_rfcn_dcn_r101_params(tmp_path):
    model = W.dcn_resnet101()
    ref = W.reference(model, seed=5)
    arrays = W.mxnet_params(ref)
    names = {k.split(":", 1)[1] for k in arrays}
    assert {"res4b22_branch2c_weight", "bn4b22_branch2c_moving_var", "res3b3_branch2b_weight",
            "res5a_branch2b_offset_weight", "res5c_branch2b_offset_bias",
            "bn_conv1_gamma", "res2a_branch1_weight"} <= names
    W.write_params(tmp_path / "rfcn_dcn_coco-0000.params", arrays)
    report = load_pretrained(model, str(tmp_path / "rfcn_dcn_coco-0000.params"))
    assert report.format == "mxnet" and not report.flipped_bgr
    assert report.missing == [] and report.unexpected == [] and report.expected_missing == []
    assert sorted(report.loaded) == sorted(ref)
    assert sorted(report.not_mapped) == sorted(
        k for k in arrays if k.split(":", 1)[1].startswith(("rpn_", "conv_new", "rfcn_")))
    assert report.pixel_mean == (123.15, 115.90, 103.06)
    _assert_equal(model, ref, ref)
    # The offset conv of res5a (72 = 2 * 4 groups * 9 taps) lands on layer4.0.conv2.
    torch.testing.assert_close(model.layer4[0].conv2.conv_offset.weight.detach(),
                               torch.from_numpy(arrays["arg:res5a_branch2b_offset_weight"]),
                               rtol=0, atol=0)


def test_imagenet_mxnet_r101_into_dcn_model_leaves_offsets_zero(tmp_path):
    model = W.dcn_resnet101()
    ref = W.reference(model, seed=6)
    W.write_params(tmp_path / "resnet_v1_101-0000.params",
                   W.mxnet_params(ref, with_offsets=False, with_head=False), version="v1")
    report = load_pretrained(model, str(tmp_path / "resnet_v1_101-0000.params"))
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.expected_missing) == _offset_keys(model)
    assert report.filled == report.fillable
    _assert_equal(model, ref, [k for k in ref if ".conv_offset." not in k])
    for key in _offset_keys(model):
        assert not model.state_dict()[key].any(), key


def test_mxnet_file_is_recognised_by_its_magic_whatever_its_name(tmp_path):
    ref = W.reference(W.tiny_resnet101())
    W.write_params(tmp_path / "resnet_v1_101-0000.bin", W.mxnet_params(ref, with_head=False),
                   version="legacy")
    assert detect_format(str(tmp_path / "resnet_v1_101-0000.bin")) == "mxnet"
    model = W.tiny_resnet101()
    report = load_pretrained(model, str(tmp_path / "resnet_v1_101-0000.bin"))
    assert report.filled == report.fillable
    _assert_equal(model, ref, ref)
