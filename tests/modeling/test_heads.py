"""Tests for the R-FCN and Faster R-CNN box heads and ``build_box_head``.

Shapes are small (C=8 input channels, K=3 classes, 16-channel 1x1 conv, 10x12 feature at
stride 8) so the whole file runs in seconds on a CPU.
"""
import dataclasses
import types

import pytest
import torch

from dcn_det.config import FastRCNNHeadConfig, RFCNHeadConfig
from dcn_det.modeling.heads import FastRCNNHead, RFCNHead, build_box_head
from dcn_det.ops import DeformPSRoIPool, RoIAlign, deform_psroi_pool, roi_align

C_IN, K, CONV, STRIDE = 8, 3, 16, 8
FEAT_H, FEAT_W = 10, 12  # input image 80 x 96 px


def _feature(dtype=torch.float32):
    return torch.randn(2, C_IN, FEAT_H, FEAT_W, dtype=dtype)


def _rois(dtype=torch.float32):
    # [batch, x1, y1, x2, y2] in image px, all inside the 96 x 80 image, off the integer grid.
    return torch.tensor([[0, 3.3, 4.1, 50.6, 60.2],
                         [1, 10.7, 9.8, 90.1, 70.4],
                         [0, 30.2, 20.9, 45.3, 33.6],
                         [1, 0.4, 0.2, 94.8, 78.9]], dtype=dtype)


def _rfcn(**kw):
    args = dict(in_channels=C_IN, num_classes=K, conv_channels=CONV, group_size=3,
                pooled_size=3, spatial_scale=1.0 / STRIDE)
    args.update(kw)
    return RFCNHead(**args)


def _fast(**kw):
    args = dict(in_channels=C_IN, num_classes=K, conv_channels=CONV, fc_dim=32,
                spatial_scale=1.0 / STRIDE)
    args.update(kw)
    return FastRCNNHead(**args)


def _lr_mults(module):
    return {name: m.lr_mult for name, m in module.named_modules() if hasattr(m, "lr_mult")}


# ---------------------------------------------------------------- shapes and layout

@pytest.mark.parametrize("deformable", [True, False])
@pytest.mark.parametrize("agnostic", [True, False])
@pytest.mark.parametrize("group_size", [3, 7])
def test_rfcn_shapes_and_official_channel_counts(deformable, agnostic, group_size):
    head = _rfcn(deformable=deformable, class_agnostic_bbox=agnostic, group_size=group_size,
                 pooled_size=group_size)
    gg = group_size ** 2
    assert head.conv_new.out_channels == CONV
    assert head.rfcn_cls.out_channels == gg * (K + 1)
    # Official class-agnostic head keeps background + foreground box maps.
    assert head.rfcn_bbox.out_channels == gg * 4 * (2 if agnostic else K + 1)
    if deformable:
        assert head.cls_offset.out_channels == 2 * gg * (K + 1)
        assert head.bbox_offset.out_channels == 2 * gg
        assert head.cls_offset.in_channels == CONV
    else:
        assert not any("offset" in n for n, _ in head.named_parameters())
    cls, box = head(_feature(), _rois())
    assert cls.shape == (4, K + 1)
    assert box.shape == (4, 1 if agnostic else K, 4)
    assert torch.isfinite(cls).all() and torch.isfinite(box).all()


@pytest.mark.parametrize("pooler", ["deformable", "psroi_plain", "roi_align"])
@pytest.mark.parametrize("agnostic", [True, False])
def test_fast_rcnn_shapes(pooler, agnostic):
    head = _fast(pooler=pooler, class_agnostic_bbox=agnostic)
    assert head.fc1.in_features == CONV * 7 * 7
    assert isinstance(head.pool, RoIAlign if pooler == "roi_align" else DeformPSRoIPool)
    has_offset = any("offset" in n for n, _ in head.named_parameters())
    assert has_offset == (pooler == "deformable")
    cls, box = head(_feature(), _rois())
    assert cls.shape == (4, K + 1)
    assert box.shape == (4, 1 if agnostic else K, 4)
    assert torch.isfinite(cls).all() and torch.isfinite(box).all()


@pytest.mark.parametrize("pooler", ["psroi_plain", "roi_align"])
def test_fast_rcnn_pooler_settings(pooler):
    # The pooled features are exactly the op called with the official settings on relu(conv).
    head = _fast(pooler=pooler).double()
    feature, rois = _feature(torch.float64), _rois(torch.float64)
    seen = []
    head.pool.register_forward_hook(lambda mod, args, out: seen.append(out))
    head(feature, rois)
    f = torch.relu(head.conv_new(feature))
    if pooler == "roi_align":
        expected = roi_align(f, rois, output_size=7, spatial_scale=1.0 / STRIDE,
                             sampling_ratio=2, aligned=True)
    else:
        expected = deform_psroi_pool(f, rois, None, spatial_scale=1.0 / STRIDE, output_dim=CONV,
                                     group_size=1, pooled_size=7, part_size=7,
                                     sample_per_part=4, trans_std=0.0)
    torch.testing.assert_close(seen[0], expected, rtol=1e-12, atol=0)


def test_rfcn_deformable_pooling_settings():
    # Official settings: per-class offsets for the scores, one shared offset field for the box
    # maps, both PS-pooled from the offset convs without offsets, trans_std 0.1, part = pooled.
    head = _rfcn(deformable=True, class_agnostic_bbox=True, trans_std=0.1,
                 sample_per_part=3).double()
    with torch.no_grad():
        for conv in (head.cls_offset, head.bbox_offset):
            conv.weight.normal_(std=0.5)
    feature, rois = _feature(torch.float64), _rois(torch.float64)
    seen = []
    for pool in (head.pool_cls, head.pool_bbox):
        pool.register_forward_hook(lambda mod, args, out: seen.append(out))
    head(feature, rois)
    f = torch.relu(head.conv_new(feature))
    common = dict(spatial_scale=1.0 / STRIDE, group_size=3, pooled_size=3, part_size=3,
                  sample_per_part=3)
    for maps, conv, dim, c_off, out in ((head.rfcn_cls(f), head.cls_offset, K + 1, K + 1, seen[0]),
                                        (head.rfcn_bbox(f), head.bbox_offset, 8, 1, seen[1])):
        offset = deform_psroi_pool(conv(f), rois, None, output_dim=2 * c_off,
                                   trans_std=0.0, **common)
        expected = deform_psroi_pool(maps, rois, offset, output_dim=dim, trans_std=0.1, **common)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)


def _all_heads():
    yield "rfcn_dcn_agnostic", _rfcn(deformable=True, class_agnostic_bbox=True)
    yield "rfcn_plain_specific", _rfcn(deformable=False, class_agnostic_bbox=False)
    for pooler in ("deformable", "psroi_plain", "roi_align"):
        for agnostic in (True, False):
            yield f"fast_{pooler}_{agnostic}", _fast(pooler=pooler, class_agnostic_bbox=agnostic)


@pytest.mark.parametrize("name,head", list(_all_heads()), ids=lambda v: v if isinstance(v, str) else "")
def test_empty_rois_give_empty_outputs(name, head):
    feature = _feature().requires_grad_()
    cls, box = head(feature, torch.zeros(0, 5))
    assert cls.shape == (0, K + 1)
    assert box.shape == (0, head.num_boxes, 4)
    # Backward through an empty batch of RoIs must work (a training step with no proposals).
    (cls.sum() + box.sum()).backward()
    assert feature.grad is not None and feature.grad.abs().sum() == 0


@pytest.mark.parametrize("agnostic", [True, False])
def test_rfcn_score_and_box_slot_layout(agnostic):
    # Constant maps make every bin of plain PS-RoI pooling return the map's value, so the
    # outputs expose which channels the head reads: class c -> channels c*G*G ..,
    # box slot s coord j -> channels (4s+j)*G*G .., background last.
    g = 3
    head = _rfcn(deformable=False, class_agnostic_bbox=agnostic).double()
    slots = 2 if agnostic else K + 1
    with torch.no_grad():
        head.rfcn_cls.weight.zero_()
        head.rfcn_bbox.weight.zero_()
        head.rfcn_cls.bias.copy_(torch.arange(K + 1, dtype=torch.float64).repeat_interleave(g * g))
        box_bias = torch.arange(4 * slots, dtype=torch.float64) + 1
        box_bias[4 * (slots - 1):] = -100.0  # background slot: must never be returned
        head.rfcn_bbox.bias.copy_(box_bias.repeat_interleave(g * g))
    cls, box = head(_feature(torch.float64), _rois(torch.float64))
    expected_cls = torch.arange(K + 1, dtype=torch.float64).expand(4, -1)
    torch.testing.assert_close(cls, expected_cls)
    b = 1 if agnostic else K
    expected_box = (torch.arange(4 * b, dtype=torch.float64) + 1).view(b, 4).expand(4, -1, -1)
    torch.testing.assert_close(box, expected_box)


# ---------------------------------------------------------------- deformable vs plain

def _copy_shared(src, dst):
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected
    assert missing and all("offset" in k for k in missing)


@pytest.mark.parametrize("agnostic", [True, False])
def test_rfcn_deformable_starts_as_plain_pooling(agnostic):
    plain = _rfcn(deformable=False, class_agnostic_bbox=agnostic).double()
    dcn = _rfcn(deformable=True, class_agnostic_bbox=agnostic).double()
    _copy_shared(plain, dcn)
    feature, rois = _feature(torch.float64), _rois(torch.float64)
    ref = plain(feature, rois)
    out = dcn(feature, rois)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-12, atol=1e-14)
    # The offsets are really used: non-zero offset convs move the bins and change both outputs.
    with torch.no_grad():
        for conv in (dcn.cls_offset, dcn.bbox_offset):
            conv.weight.normal_(std=5.0)
    moved = dcn(feature, rois)
    assert not torch.allclose(moved[0], ref[0])
    assert not torch.allclose(moved[1], ref[1])


def test_fast_rcnn_deformable_starts_as_plain_pooling():
    plain = _fast(pooler="psroi_plain").double()
    dcn = _fast(pooler="deformable").double()
    _copy_shared(plain, dcn)
    feature, rois = _feature(torch.float64), _rois(torch.float64)
    ref = plain(feature, rois)
    out = dcn(feature, rois)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        dcn.offset_fc.bias.normal_(std=3.0)
    moved = dcn(feature, rois)
    assert not torch.allclose(moved[0], ref[0])


def _sgd_step_changes_offsets(head, offset_layers):
    feature, rois = _feature(torch.float64), _rois(torch.float64)
    cls, box = head(feature, rois)
    # A loss with no symmetry that could cancel the offset gradient.
    loss = (cls * torch.randn_like(cls)).sum() + (box * torch.randn_like(box)).sum()
    loss.backward()
    for layer in offset_layers:
        assert layer.weight.grad is not None
        assert layer.weight.grad.abs().max() > 0, "no gradient reached the offset branch"
    torch.optim.SGD(head.parameters(), lr=10.0).step()
    for layer in offset_layers:
        assert layer.weight.abs().max() > 0
    head.zero_grad()
    return cls.detach(), head(feature, rois)[0].detach()


def test_rfcn_gradients_reach_offset_convs():
    head = _rfcn(deformable=True).double()
    before, after = _sgd_step_changes_offsets(
        head, [head.cls_offset, head.bbox_offset])
    assert not torch.allclose(before, after)


def test_fast_rcnn_gradients_reach_offset_fc():
    head = _fast(pooler="deformable").double()
    before, after = _sgd_step_changes_offsets(head, [head.offset_fc])
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------- lr_mult and init

def test_rfcn_lr_mult_attributes():
    head = _rfcn(deformable=True, conv_lr_mult=3.0, offset_lr_mult=0.5)
    assert _lr_mults(head) == {"conv_new": 3.0, "cls_offset": 0.5,
                               "bbox_offset": 0.5}
    assert _lr_mults(_rfcn(deformable=False)) == {"conv_new": 3.0}
    # Defaults are the official ones: conv x3, offset convs x1 (the paper's default beta).
    assert _lr_mults(_rfcn()) == {"conv_new": 3.0, "cls_offset": 1.0,
                                  "bbox_offset": 1.0}


def test_fast_rcnn_lr_mult_attributes():
    assert _lr_mults(_fast(pooler="deformable")) == {"conv_new": 1.0, "offset_fc": 0.01}
    assert _lr_mults(_fast(pooler="roi_align", conv_lr_mult=2.0)) == {"conv_new": 2.0}


def test_rfcn_init_is_official():
    head = RFCNHead(in_channels=64, num_classes=K, conv_channels=128)
    for conv in (head.conv_new, head.rfcn_cls, head.rfcn_bbox):
        assert abs(conv.weight.std().item() - 0.01) < 0.001
        assert conv.weight.mean().abs() < 0.001
        assert torch.count_nonzero(conv.bias) == 0
    for conv in (head.cls_offset, head.bbox_offset):
        assert torch.count_nonzero(conv.weight) == 0 and torch.count_nonzero(conv.bias) == 0


def test_fast_rcnn_init_is_official():
    head = FastRCNNHead(in_channels=64, num_classes=K, conv_channels=32, fc_dim=256)
    # Official init_weight_rcnn: N(0, 0.01) for every new layer, the box regressor included.
    for layer in (head.conv_new, head.fc1, head.fc2, head.cls_score, head.bbox_pred):
        assert abs(layer.weight.std().item() - 0.01) < 0.0015, layer
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(head.offset_fc.weight) == 0
    assert torch.count_nonzero(head.offset_fc.bias) == 0



def _he_std(layer):
    fan_in = layer.weight[0].numel()
    return (2.0 / fan_in) ** 0.5


def test_kaiming_hidden_init_rescales_only_the_hidden_layers():
    # He-normal hidden layers (fan-in, ReLU gain), zero biases; output layers and the
    # zero-initialised offset branches keep the official init.
    torch.manual_seed(0)
    head = RFCNHead(in_channels=64, num_classes=K, conv_channels=128, hidden_init="kaiming")
    assert abs(head.conv_new.weight.std().item() / _he_std(head.conv_new) - 1) < 0.05
    assert torch.count_nonzero(head.conv_new.bias) == 0
    for conv in (head.rfcn_cls, head.rfcn_bbox):
        assert abs(conv.weight.std().item() - 0.01) < 0.001
    assert torch.count_nonzero(head.cls_offset.weight) == 0
    fast = FastRCNNHead(in_channels=64, num_classes=K, conv_channels=32, fc_dim=256,
                        hidden_init="kaiming")
    for layer in (fast.conv_new, fast.fc1, fast.fc2):
        assert abs(layer.weight.std().item() / _he_std(layer) - 1) < 0.05, layer
        assert torch.count_nonzero(layer.bias) == 0
    for layer in (fast.cls_score, fast.bbox_pred):
        assert abs(layer.weight.std().item() - 0.01) < 0.0015, layer
    assert torch.count_nonzero(fast.offset_fc.weight) == 0


def test_kaiming_hidden_init_keeps_the_activation_scale():
    # The reason for the option: with the official init a unit-variance feature leaves the
    # hidden layer ~10x smaller; with He init its second moment stays about the same.
    torch.manual_seed(0)
    x = torch.randn(2, 256, 16, 16)
    scale = {}
    for init in ("official", "kaiming"):
        head = RFCNHead(in_channels=256, num_classes=K, conv_channels=256, hidden_init=init)
        f = torch.relu(head.conv_new(x))
        scale[init] = f.pow(2).mean().sqrt().item() / x.pow(2).mean().sqrt().item()
    assert scale["official"] < 0.2
    assert 0.8 < scale["kaiming"] < 1.25


def test_build_box_head_passes_hidden_init():
    for kind in ("rfcn", "fast_rcnn"):
        head = build_box_head(_cfg(type=kind, hidden_init="kaiming"), in_channels=C_IN,
                              num_classes=K, feature_stride=STRIDE)
        assert head.conv_new.weight.std().item() > 0.1, kind  # He std sqrt(2/8) = 0.5
    with pytest.raises(ValueError, match=r"hidden_init.*'official', 'kaiming'.*'xavier'"):
        RFCNHead(in_channels=C_IN, num_classes=K, hidden_init="xavier")
    with pytest.raises(ValueError, match=r"hidden_init.*'xavier'"):
        FastRCNNHead(in_channels=C_IN, num_classes=K, hidden_init="xavier")



def test_rfcn_score_lr_mult_marks_only_the_score_and_box_maps():
    assert "rfcn_cls" not in _lr_mults(_rfcn())  # official: no multiplier on the maps
    head = _rfcn(score_lr_mult=9.0, conv_lr_mult=3.0)
    mults = _lr_mults(head)
    assert mults["rfcn_cls"] == 9.0 and mults["rfcn_bbox"] == 9.0 and mults["conv_new"] == 3.0
    built = build_box_head(_cfg(type="rfcn", score_lr_mult=9.0), in_channels=C_IN,
                           num_classes=K, feature_stride=STRIDE)
    assert _lr_mults(built)["rfcn_cls"] == 9.0
    with pytest.raises(ValueError, match=r"score_lr_mult.*positive number.*0"):
        _rfcn(score_lr_mult=0)


# ---------------------------------------------------------------- builder

def _cfg(type="rfcn", **kw):
    """The real head config of ``type`` with small sizes; ``kw`` overrides fields."""
    if type == "rfcn":
        fields, base = dict(group_size=3), RFCNHeadConfig()
    else:
        fields, base = dict(fc_dim=32), FastRCNNHeadConfig()
    fields.update(conv_channels=CONV, pooled_size=3, sample_per_part=2)
    fields.update(kw)
    return dataclasses.replace(base, **fields)


def test_build_box_head_rfcn_matches_direct_construction():
    cfg = _cfg(type="rfcn", class_agnostic_bbox=False, offset_lr_mult=0.5)
    torch.manual_seed(1)
    built = build_box_head(cfg, in_channels=C_IN, num_classes=K, feature_stride=STRIDE)
    torch.manual_seed(1)
    direct = RFCNHead(in_channels=C_IN, num_classes=K, conv_channels=CONV, conv_lr_mult=3.0,
                      deformable=True, group_size=3, pooled_size=3, sample_per_part=2,
                      trans_std=0.1, spatial_scale=1.0 / STRIDE, class_agnostic_bbox=False,
                      offset_lr_mult=0.5)
    assert isinstance(built, RFCNHead)
    assert _lr_mults(built) == _lr_mults(direct)
    with torch.no_grad():  # non-zero offsets so trans_std and the scale both matter
        for head in (built, direct):
            head.cls_offset.weight.fill_(0.3)
    feature, rois = _feature(), _rois()
    for a, b in zip(built(feature, rois), direct(feature, rois)):
        # Outputs at init are ~1e-4, so compare relatively (the default atol would hide a
        # wrong spatial_scale).
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("pooler", ["deformable", "psroi_plain", "roi_align"])
def test_build_box_head_fast_rcnn(pooler):
    cfg = _cfg(type="fast_rcnn", pooler=pooler, conv_lr_mult=1.0, offset_lr_mult=0.01,
               pooled_size=7, class_agnostic_bbox=False)
    torch.manual_seed(2)
    built = build_box_head(cfg, in_channels=C_IN, num_classes=K, feature_stride=STRIDE)
    torch.manual_seed(2)
    direct = FastRCNNHead(in_channels=C_IN, num_classes=K, conv_channels=CONV, pooler=pooler,
                          pooled_size=7, sample_per_part=2, trans_std=0.1,
                          spatial_scale=1.0 / STRIDE, fc_dim=32, class_agnostic_bbox=False,
                          offset_lr_mult=0.01, conv_lr_mult=1.0)
    assert isinstance(built, FastRCNNHead) and built.pooler == pooler
    assert _lr_mults(built) == _lr_mults(direct)
    if pooler == "deformable":  # non-zero offsets so trans_std matters
        with torch.no_grad():
            for head in (built, direct):
                head.offset_fc.bias.fill_(0.5)
    feature, rois = _feature(), _rois()
    for a, b in zip(built(feature, rois), direct(feature, rois)):
        # Outputs at init are ~1e-4, so compare relatively (the default atol would hide a
        # wrong spatial_scale).
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


def test_build_box_head_with_default_head_config():
    cfg = RFCNHeadConfig()
    head = build_box_head(cfg, in_channels=C_IN, num_classes=K, feature_stride=16)
    assert isinstance(head, RFCNHead) and head.deformable
    assert head.rfcn_cls.out_channels == 7 * 7 * (K + 1)
    assert _lr_mults(head) == {"conv_new": cfg.conv_lr_mult,
                               "cls_offset": cfg.offset_lr_mult,
                               "bbox_offset": cfg.offset_lr_mult}
    cls, box = head(torch.randn(1, C_IN, 6, 7), torch.tensor([[0, 5.0, 8.0, 80.0, 90.0]]))
    assert cls.shape == (1, K + 1) and box.shape == (1, 1, 4)


# ---------------------------------------------------------------- bad input

def test_bad_feature_and_rois_are_rejected_with_clear_messages():
    head = _rfcn(deformable=False)
    with pytest.raises(ValueError, match=r"in_channels=8.*\(2, 5, 10, 12\)"):
        head(torch.randn(2, 5, FEAT_H, FEAT_W), _rois())
    with pytest.raises(ValueError, match=r"feature.*\(N, 8, H, W\).*\(8, 10, 12\)"):
        head(torch.randn(C_IN, FEAT_H, FEAT_W), _rois())
    with pytest.raises(ValueError, match=r"rois.*\(R, 5\).*\(4, 4\)"):
        head(_feature(), _rois()[:, 1:])
    with pytest.raises(ValueError, match=r"rois is on cpu but feature is on meta"):
        _fast(pooler="roi_align").to("meta")(_feature().to("meta"), _rois())


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"num_classes.*positive int.*0"):
        _rfcn(num_classes=0)
    with pytest.raises(ValueError, match=r"group_size.*positive int.*2\.5"):
        _rfcn(group_size=2.5)
    with pytest.raises(ValueError, match=r"pooler.*roi_align.*'roi_pool'"):
        _fast(pooler="roi_pool")
    with pytest.raises(ValueError, match=r"spatial_scale.*positive number.*-0\.1"):
        _fast(spatial_scale=-0.1)
    with pytest.raises(TypeError):
        RFCNHead(C_IN, K)  # keyword arguments only


def test_build_box_head_rejects_bad_type_and_stride():
    with pytest.raises(ValueError, match=r"model\.head\.type.*'mask'"):
        # A stand-in object: the config loader itself already rejects unknown types.
        bad = types.SimpleNamespace(**{**dataclasses.asdict(RFCNHeadConfig()), "type": "mask"})
        build_box_head(bad, in_channels=C_IN, num_classes=K, feature_stride=16)
    with pytest.raises(ValueError, match=r"feature_stride.*0"):
        build_box_head(_cfg(), in_channels=C_IN, num_classes=K, feature_stride=0)


def test_checkpoints_with_the_old_offset_layer_names_load():
    # Before the offset branches moved into the heads, they lived in the pooling module.
    rfcn = _rfcn(deformable=True)
    with torch.no_grad():
        rfcn.cls_offset.weight.normal_()
        rfcn.bbox_offset.bias.normal_()
    renames = {"cls_offset": "pool_cls.conv_offset", "bbox_offset": "pool_bbox.conv_offset"}
    old = {}
    for k, v in rfcn.state_dict().items():
        layer, _, suffix = k.rpartition(".")
        old[f"{renames.get(layer, layer)}.{suffix}"] = v
    assert "pool_cls.conv_offset.weight" in old and "cls_offset.weight" not in old
    fresh = _rfcn(deformable=True)
    fresh.load_state_dict(old)  # strict
    for k, v in rfcn.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    fast = _fast(pooler="deformable")
    old = {("pool.fc_offset." + k.split(".", 1)[1] if k.startswith("offset_fc.") else k): v
           for k, v in fast.state_dict().items()}
    _fast(pooler="deformable").load_state_dict(old)
