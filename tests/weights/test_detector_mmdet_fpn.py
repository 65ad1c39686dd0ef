"""model.weights from mmdetection Faster R-CNN FPN checkpoints (R-50-FPN and its dconv / mdconv
c3-c5 variants) at width 1/8: every tensor filled or explained, values in place, anchors the
same, class-count change, C4 <-> FPN refused, unmappable variants refused naming the key."""
import logging
import math

import pytest
import torch

from dcn_det.config import load_config
from dcn_det.modeling import build_model
from dcn_det.modeling.rpn.anchor_generator import FPNAnchorGenerator
from dcn_det.weights import WeightsError, detect_detector_format, load_detector_weights
from tests.weights import mmdet_fpn_writer as M
from tests.weights import writers as W
from tests.weights.detectors import detector, snapshot
from tests.weights.test_detector_mmdet import C4

SMALL = ("model.backbone.width_mult=0.125", "model.neck.out_channels=16",
         "model.rpn.conv_channels=16", "model.head.fc_dim=32")
R50 = "configs/faster_rcnn_fpn/faster_rcnn_fpn_r50_coco.yaml"
DCONV = "configs/faster_rcnn_fpn/faster_rcnn_fpn_r50_dcn_c3-c5_coco.yaml"
MDCONV = "configs/faster_rcnn_fpn/faster_rcnn_fpn_r50_mdconv_c3-c5_coco.yaml"
HEAD = "roi_heads.box_head."


def fpn_detector(config=R50, *overrides, seed=0):
    cfg = load_config(config, list(SMALL + overrides))
    torch.manual_seed(seed)
    return cfg, build_model(cfg.model)


def write(tmp_path, name, ckpt):
    path = str(tmp_path / name)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("config,dcn", [(R50, None), (DCONV, "DCN"), (MDCONV, "DCNv2")],
                         ids=["r50_fpn", "dconv_c3-c5", "mdconv_c3-c5"])
def test_mmdet_fpn_fills_every_tensor_in_place(tmp_path, caplog, config, dcn):
    cfg, model = fpn_detector(config)
    ref = W.detector_reference(model, seed=3)
    stages = (3, 4, 5) if dcn else ()
    ckpt = M.checkpoint(ref, dcn_stages=stages, dcn=dcn)
    # the file is mmdetection's exact key set (with step counters), nothing more
    assert sorted(ckpt["state_dict"]) == sorted(M.r50_fpn_keys(stages))
    path = write(tmp_path, "faster-rcnn_r50_fpn_1x_coco.pth", ckpt)
    assert detect_detector_format(path) == "mmdet"
    with caplog.at_level(logging.INFO, logger="dcn_det.weights"):
        report = load_detector_weights(model, path, pixel_mean=cfg.model.pixel_mean,
                                       pixel_std=cfg.model.pixel_std)
    assert report.filled == report.fillable == len(ref)
    assert report.missing == report.unexpected == report.not_mapped == []
    assert report.reinitialised == report.offset_mismatch == []
    assert sorted(report.ignored) == sorted(k for k in ckpt["state_dict"]
                                            if k.endswith("num_batches_tracked"))
    state = model.state_dict()
    for key, value in ref.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    # spot checks, by the file's own names: class 17's score row and its 4 box rows stay at
    # row 17 / rows 68-71, the background stays the last score row (mmdetection >= 2.0)
    sd = ckpt["state_dict"]
    assert torch.equal(state[HEAD + "cls_score.weight"][17],
                       sd["roi_head.bbox_head.fc_cls.weight"][17])
    assert torch.equal(state[HEAD + "cls_score.bias"][80], sd["roi_head.bbox_head.fc_cls.bias"][80])
    assert torch.equal(state[HEAD + "bbox_pred.weight"][68:72],
                       sd["roi_head.bbox_head.fc_reg.weight"][68:72])
    assert torch.equal(state["neck.output_convs.2.bias"], sd["neck.fpn_convs.2.conv.bias"])
    assert torch.equal(state["rpn.head.cls_logits.weight"], sd["rpn_head.rpn_cls.weight"])
    if dcn:
        key = "backbone.layer3.5.conv2.conv_offset.weight"
        assert state[key].shape[0] == (27 if dcn == "DCNv2" else 18)
        assert torch.equal(state[key], sd[key])
    assert not report.flipped_bgr and report.pixel_mean == (123.675, 116.28, 103.53)
    assert "pixel_mean" not in caplog.text and "stride" not in caplog.text
    assert any("anchor_offset 0" in n for n in report.notes)
    assert not any("half a stride" in n for n in report.notes)  # the C4 note


def test_mmdet_fpn_anchors_are_ours_with_offset_0():
    """mmdetection's AnchorGenerator(scales=[8], ratios=[0.5, 1, 2], strides 4-64,
    center_offset=0), written out: base w = stride * 8 / sqrt(r), h = stride * 8 * sqrt(r),
    centred on (j * stride, i * stride), ratio-major, grid position-major."""
    cfg, model = fpn_detector()
    assert cfg.model.rpn.anchor_offset == 0.0
    gen = model.rpn.anchor_generator
    assert isinstance(gen, FPNAnchorGenerator)
    feats = [torch.zeros(1, 1, h, w) for h, w in ((5, 7), (3, 4), (2, 2), (1, 1), (1, 1))]
    ours = gen.grid_anchors(feats)
    for level, (f, stride) in enumerate(zip(feats, (4, 8, 16, 32, 64))):
        h, w = f.shape[-2:]
        rows = []
        for i in range(h):
            for j in range(w):
                for r in (0.5, 1.0, 2.0):
                    aw, ah = stride * 8 / math.sqrt(r), stride * 8 * math.sqrt(r)
                    cx, cy = j * stride, i * stride
                    rows.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
        torch.testing.assert_close(ours[level].double(), torch.tensor(rows, dtype=torch.float64),
                                   rtol=1e-6, atol=1e-4)


def test_mmdet_fpn_rpn_outputs_are_read_in_mmdetections_anchor_order(tmp_path):
    """mmdetection's RPNHead reads ``rpn_cls (N, A, H, W).permute(0, 2, 3, 1).reshape(N, -1)``
    and ``rpn_reg (N, 4A, H, W).permute(0, 2, 3, 1).reshape(N, -1, 4)``: anchor ``(i*W + j)*A
    + a`` gets channel ``a`` and channels ``4a..4a+3``, the order of the anchors above. Ours,
    after loading, must give the same values at the same indices (float64)."""
    _, model = fpn_detector()
    ref = W.detector_reference(model, seed=2)
    sd = M.checkpoint(ref)["state_dict"]
    load_detector_weights(model, write(tmp_path, "fpn.pth", M.checkpoint(ref)))
    head = model.rpn.head.double()
    x = torch.randn(1, 16, 3, 5, dtype=torch.float64)
    objectness, deltas = head(x)
    t = torch.relu(torch.nn.functional.conv2d(x, sd["rpn_head.rpn_conv.weight"].double(),
                                              sd["rpn_head.rpn_conv.bias"].double(), padding=1))
    cls = torch.nn.functional.conv2d(t, sd["rpn_head.rpn_cls.weight"].double(),
                                     sd["rpn_head.rpn_cls.bias"].double())
    reg = torch.nn.functional.conv2d(t, sd["rpn_head.rpn_reg.weight"].double(),
                                     sd["rpn_head.rpn_reg.bias"].double())
    assert objectness.shape == (1, 3 * 5 * 3) and deltas.shape == (1, 45, 4)
    for i, j, a in ((0, 0, 0), (1, 3, 2), (2, 4, 1)):
        n = (i * 5 + j) * 3 + a
        assert objectness[0, n] == cls[0, a, i, j]
        assert torch.equal(deltas[0, n], reg[0, 4 * a:4 * a + 4, i, j])


def test_mmdet_fpn_class_count_change_reinitialises_class_layers(tmp_path, caplog):
    _, source_model = fpn_detector()
    ref = W.detector_reference(source_model, seed=4)
    path = write(tmp_path, "coco.pth", M.checkpoint(ref))
    _, model = fpn_detector(R50, "model.num_classes=20")
    fresh = snapshot(model)
    with caplog.at_level(logging.WARNING, logger="dcn_det.weights"):
        report = load_detector_weights(model, path)
    cls = [HEAD + f"{m}.{f}" for m in ("cls_score", "bbox_pred") for f in ("weight", "bias")]
    assert sorted(report.reinitialised) == sorted(cls) and report.file_num_classes == 80
    state = model.state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in cls)
    assert torch.equal(state[HEAD + "fc2.weight"], ref[HEAD + "fc2.weight"])
    assert report.filled == report.fillable - len(cls)
    assert "has 80 classes, the model 20" in caplog.text
    assert "roi_heads.box_head.cls_score" in caplog.text


def test_mmdet_c4_file_into_fpn_model_and_back_is_refused(tmp_path):
    _, c4_model = detector(*C4)
    c4_path = write(tmp_path, "faster_rcnn_r50_caffe_c4.pth",
                    W.mmdet_c4_checkpoint(W.detector_reference(c4_model)))
    _, fpn_model = fpn_detector()
    fresh = snapshot(fpn_model)
    with pytest.raises(WeightsError, match=r"caffe_c4\.pth.*single-feature \(C4\) detector.*"
                                           r"model\.neck\.type: fpn"):
        load_detector_weights(fpn_model, c4_path)
    assert all(torch.equal(v, fresh[k]) for k, v in fpn_model.state_dict().items())
    fpn_path = write(tmp_path, "fpn.pth", M.checkpoint(W.detector_reference(fpn_model)))
    with pytest.raises(WeightsError, match=r"fpn\.pth.*is an FPN detector.*model\.neck\.type: "
                                           r"none"):
        load_detector_weights(c4_model, fpn_path)


def test_mmdet_fpn_caffe_style_is_flipped_to_rgb_and_warns_on_stride(tmp_path, caplog):
    cfg, model = fpn_detector()  # pytorch style: stride on the 3x3
    ref = W.detector_reference(model, seed=5)
    path = write(tmp_path, "faster-rcnn_r50-caffe_fpn_1x_coco.pth", M.checkpoint(ref, caffe=True))
    with caplog.at_level(logging.WARNING, logger="dcn_det.weights"):
        report = load_detector_weights(model, path, pixel_mean=cfg.model.pixel_mean,
                                       pixel_std=cfg.model.pixel_std)
    assert report.flipped_bgr and report.pixel_mean == (123.675, 116.28, 103.53)
    assert report.pixel_std == (1.0, 1.0, 1.0)
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], ref["backbone.conv1.weight"])
    assert "stride_in_1x1" in caplog.text and "pixel_std" in caplog.text


@pytest.mark.parametrize("extra,key,why", [
    ("dpool", "roi_head.bbox_roi_extractor.roi_layers.0.offset_fc.0.weight", "DeformRoIPoolPack"),
    ("p6_conv", "neck.fpn_convs.4.conv.weight", "P6 max-pooled"),
    ("shared_conv", "roi_head.bbox_head.shared_convs.0.conv.weight", "Shared2FCBBoxHead"),
])
def test_mmdet_fpn_unmappable_variants_are_refused_naming_the_key(tmp_path, extra, key, why):
    _, model = fpn_detector()
    ref = W.detector_reference(model)
    tensors = {"dpool": M.dpool_offset_fcs(16),
               "p6_conv": {key: torch.randn(16, 16, 3, 3), key[:-6] + "bias": torch.randn(16)},
               "shared_conv": {key: torch.randn(16, 16, 3, 3)}}[extra]
    path = write(tmp_path, f"{extra}.pth", M.checkpoint(ref, extra=tensors))
    fresh = snapshot(model)
    with pytest.raises(WeightsError, match=rf"{extra}\.pth.*{key.replace('.', '[.]')} has no "
                                           rf"exact counterpart.*{why}"):
        load_detector_weights(model, path)
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items())


def test_mmdet_version_1_is_refused(tmp_path):
    _, model = fpn_detector()
    ckpt = M.checkpoint(W.detector_reference(model))
    ckpt["meta"]["mmdet_version"] = "1.0rc0+d3ca926"
    path = write(tmp_path, "v1.pth", ckpt)
    with pytest.raises(WeightsError, match=r"v1\.pth.*mmdetection 1\.x.*background first.*"
                                           r"upgrade_model_version"):
        load_detector_weights(model, path)
    state = ckpt["state_dict"]
    for k in [k for k in state if k.startswith("roi_head.bbox_head.")]:  # 1.x: no roi_head
        state[k[len("roi_head."):]] = state.pop(k)
    ckpt["meta"]["mmdet_version"] = None
    torch.save(ckpt, path)
    with pytest.raises(WeightsError, match=r"key 'bbox_head\.fc_.*'"):
        load_detector_weights(model, path)


def test_convert_tool_detector_converts_an_mmdet_fpn_file(tmp_path, capsys):
    from dcn_det.tools import convert_weights as tool
    _, model = fpn_detector(DCONV)
    ref = W.detector_reference(model, seed=8)
    path = write(tmp_path, "dconv.pth", M.checkpoint(ref, dcn_stages=(3, 4, 5), dcn="DCN"))
    assert tool.main(["--detector", "--input", path, "--output", str(tmp_path / "det.pth")]) == 0
    assert "as mmdet" in capsys.readouterr().out
    saved = torch.load(tmp_path / "det.pth", weights_only=True)
    assert sorted(k for k in saved["model"] if not k.endswith("num_batches_tracked")) == \
        sorted(ref)
    assert detect_detector_format(str(tmp_path / "det.pth")) == "dcn_det"
    _, target = fpn_detector(DCONV, seed=1)
    report = load_detector_weights(target, str(tmp_path / "det.pth"))
    assert report.filled == report.fillable and report.file_num_classes == 80
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
