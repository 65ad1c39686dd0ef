"""Tests for the ResNet backbone, its norm layers and torchvision weight loading."""
import dataclasses
import logging

import pytest
import torch
from torch import nn

from dcn_det.config import BackboneConfig
from dcn_det.modeling.backbone import ResNet, build_backbone, load_pretrained
from dcn_det.modeling.backbone.resnet import scaled_width
from dcn_det.modeling.layers import FrozenBatchNorm2d, get_norm

TINY = dict(width_mult=0.125)  # stem 8, stage widths 8/16/32/64


def tiny(**kwargs):
    args = dict(depth=18, width_mult=0.125, freeze_at=0, norm="frozen_bn")
    args.update(kwargs)
    return ResNet(**args)


def randomize_norms(model):
    """Gives every norm non-trivial statistics and affine values, so a wrong map shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# ---------------------------------------------------------------- output shapes and strides

@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_output_shapes_and_strides(depth, dilation):
    model = ResNet(depth=depth, res5_dilation=dilation, freeze_at=0,
                   out_features=["stem", "res2", "res3", "res4", "res5"], **TINY).eval()
    expansion = 1 if depth < 50 else 4
    expected_strides = {"stem": 4, "res2": 4, "res3": 8, "res4": 16,
                        "res5": 32 if dilation == 1 else 16}
    expected_channels = {"stem": 8, "res2": 8 * expansion, "res3": 16 * expansion,
                         "res4": 32 * expansion, "res5": 64 * expansion}
    assert model.out_strides == expected_strides
    assert model.out_channels == expected_channels
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert list(out) == ["stem", "res2", "res3", "res4", "res5"]
    for name, feat in out.items():
        s = expected_strides[name]
        assert feat.shape == (2, expected_channels[name], 64 // s, 96 // s), name


def test_odd_input_sizes_round_up():
    model = tiny(res5_dilation=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 101))
    # Every stride-2 layer maps n -> ceil(n / 2).
    assert out["res4"].shape[-2:] == (5, 7)
    assert out["res5"].shape[-2:] == (5, 7)


def test_default_out_features_and_unbuilt_stages():
    model = tiny()
    assert model.out_features == ["res4", "res5"]
    short = tiny(out_features=["res3"])
    assert not hasattr(short, "layer3") and not hasattr(short, "layer4")
    assert list(short(torch.randn(1, 3, 32, 32))) == ["res3"]


def test_width_mult_rounds_to_multiples_of_8():
    assert scaled_width(64, 1.0) == 64
    assert scaled_width(64, 0.125) == 8
    assert scaled_width(64, 0.05) == 8
    assert scaled_width(512, 0.3) == 152


def test_standard_resnet50_parameter_count():
    # torchvision resnet50 has 25,557,032 params; minus fc (2,049,000) and the BN affine
    # params (53,120), which are buffers in FrozenBatchNorm2d.
    model = ResNet(depth=50, norm="frozen_bn", freeze_at=0)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 - 2_049_000 - 53_120


# ---------------------------------------------------------------- stride placement

@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_in_1x1_places_the_stride(stride_in_1x1):
    model = ResNet(depth=50, stride_in_1x1=stride_in_1x1, freeze_at=0, **TINY).eval()
    shapes = {}
    for name in ("conv1", "conv2", "conv3"):
        getattr(model.layer2[0], name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # layer2 (res3) input is 16x16 (stride 4); its first block halves it.
    if stride_in_1x1:
        assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
        assert shapes == {"conv1": (8, 8), "conv2": (8, 8), "conv3": (8, 8)}
    else:
        assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)
        assert shapes == {"conv1": (16, 16), "conv2": (8, 8), "conv3": (8, 8)}
    assert model.layer2[0].downsample[0].stride == (2, 2)
    assert all(b.conv1.stride == (1, 1) and b.conv2.stride == (1, 1) for b in model.layer2[1:])


@pytest.mark.parametrize("dilation", [2, 4])
def test_res5_dilation_settings(dilation):
    model = ResNet(depth=50, res5_dilation=dilation, freeze_at=0, **TINY)
    for block in model.layer4:
        assert block.conv2.dilation == (dilation,) * 2 and block.conv2.padding == (dilation,) * 2
        assert block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1)
    assert model.layer4[0].downsample[0].stride == (1, 1)
    assert model.layer3[0].conv2.dilation == (1, 1)


# ---------------------------------------------------------------- freezing

def _stage_prefixes(freeze_at):
    stages = [("conv1.", "bn1."), ("layer1.",), ("layer2.",), ("layer3.",), ("layer4.",)]
    return tuple(p for s in stages[:freeze_at] for p in s)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_freeze_at_freezes_exactly_the_early_stages(freeze_at, norm):
    model = tiny(freeze_at=freeze_at, norm=norm, gn_groups=4)
    prefixes = _stage_prefixes(freeze_at)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(prefixes)), name
    for name, m in model.named_modules():
        if name.endswith(("bn1", "bn2", "downsample.1")):
            frozen = name.startswith(tuple(p.rstrip(".") for p in prefixes))
            if norm == "bn":
                assert isinstance(m, FrozenBatchNorm2d if frozen else nn.BatchNorm2d), name
            else:
                assert isinstance(m, nn.GroupNorm), name
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    if freeze_at < 5:
        sum(o.sum() for o in out.values()).backward()
        for name, p in model.named_parameters():
            assert (p.grad is None) == name.startswith(prefixes), name


# ---------------------------------------------------------------- norm layers

def test_frozen_bn_equals_eval_batchnorm_and_loads_its_state_dict():
    bn = nn.BatchNorm2d(6).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3.0)
    bn.num_batches_tracked.fill_(17)
    bn.eval()
    frozen = FrozenBatchNorm2d(6).double()
    result = frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked dropped
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(FrozenBatchNorm2d.from_batchnorm(bn)(x), bn(x))
    assert frozen.eps == 1e-5
    assert list(dict(frozen.named_parameters())) == []
    assert sorted(dict(frozen.named_buffers())) == ["bias", "running_mean", "running_var",
                                                    "weight"]


def test_frozen_bn_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\).*\(2, 3, 5, 5\)"):
        FrozenBatchNorm2d(4)(torch.randn(2, 3, 5, 5))


def test_get_norm_kinds():
    assert isinstance(get_norm("frozen_bn", 8), FrozenBatchNorm2d)
    assert type(get_norm("bn", 8)) is nn.BatchNorm2d
    gn = get_norm("gn", 8, gn_groups=4)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 4
    # Not distributed: nothing to synchronise, so plain BatchNorm (same state dict).
    assert type(get_norm("syncbn", 8)) is nn.BatchNorm2d
    with pytest.raises(ValueError, match="gn_groups=3.*8 channels"):
        get_norm("gn", 8, gn_groups=3)
    with pytest.raises(ValueError, match="norm must be one of.*'ln'"):
        get_norm("ln", 8)


def test_syncbn_under_a_gloo_group_builds_batchnorm(tmp_path):
    import torch.distributed as dist
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        assert type(get_norm("syncbn", 8)) is nn.BatchNorm2d
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("norm", ["gn", "bn", "syncbn", "frozen_bn"])
def test_each_norm_builds_trains_and_evaluates(norm):
    model = ResNet(depth=50, norm=norm, gn_groups=8, freeze_at=1, **TINY)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    (out["res4"].mean() + out["res5"].mean()).backward()
    assert model.layer1[0].conv1.weight.grad is not None
    assert torch.isfinite(model.layer4[0].conv2.weight.grad).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))["res5"]).all()


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(depth=42), r"depth must be one of \[18, 34, 50, 101\], got 42"),
    (dict(norm="batchnorm"), r"norm must be one of .*'batchnorm'"),
    (dict(freeze_at=6), r"freeze_at must be an int in 0\.\.5, got 6"),
    (dict(res5_dilation=3), r"res5_dilation must be 1, 2 or 4, got 3"),
    (dict(deform_stages=["res2"]), r"deform_stages .*\['res2'\]"),
    (dict(deform_stages="res5"), r"deform_stages .*'res5'"),
    (dict(out_features=["res6"]), r"out_features .*\['res6'\]"),
    (dict(out_features=[]), r"out_features must be a non-empty"),
    (dict(width_mult=0), r"width_mult must be a positive number, got 0"),
    (dict(norm="gn", gn_groups=32), r"gn_groups=32 .*8 channels"),
    (dict(deform_stages=["res3"], deform_offset_groups=3),
     r"deform_offset_groups=3 must divide .* 16 input channels"),
])
def test_bad_arguments_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny(**kwargs)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(1, 1, 32, 32\)"):
        tiny()(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------- torchvision weights

def torchvision_resnet_state_dict(depth, width=8, num_classes=10):
    """A random state dict with torchvision ResNet's key names and shapes, written from
    torchvision's architecture (not from our model), at stem/res2 width ``width``."""
    g = torch.Generator().manual_seed(2)
    sd = {}

    def bn(prefix, c):
        sd[prefix + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".bias"] = torch.randn(c, generator=g)
        sd[prefix + ".running_mean"] = torch.randn(c, generator=g)
        sd[prefix + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".num_batches_tracked"] = torch.tensor(1000)

    def conv(key, cout, cin, k):
        sd[key] = torch.randn(cout, cin, k, k, generator=g) * 0.1

    bottleneck = depth >= 50
    counts = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    conv("conv1.weight", width, 3, 7)
    bn("bn1", width)
    cin = width
    for stage, n in enumerate(counts):
        planes = width * 2 ** stage
        cout = planes * (4 if bottleneck else 1)
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            if bottleneck:
                conv(p + ".conv1.weight", planes, cin, 1)
                bn(p + ".bn1", planes)
                conv(p + ".conv2.weight", planes, planes, 3)
                bn(p + ".bn2", planes)
                conv(p + ".conv3.weight", cout, planes, 1)
                bn(p + ".bn3", cout)
            else:
                conv(p + ".conv1.weight", planes, cin, 3)
                bn(p + ".bn1", planes)
                conv(p + ".conv2.weight", planes, planes, 3)
                bn(p + ".bn2", planes)
            if b == 0 and (stage > 0 or cin != cout):
                conv(p + ".downsample.0.weight", cout, cin, 1)
                bn(p + ".downsample.1", cout)
            cin = cout
    sd["fc.weight"] = torch.randn(num_classes, cin, generator=g)
    sd["fc.bias"] = torch.randn(num_classes, generator=g)
    return sd


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_keys_map_onto_every_tensor(tmp_path, depth):
    sd = torchvision_resnet_state_dict(depth)
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    model = ResNet(depth=depth, stride_in_1x1=False, norm="frozen_bn", freeze_at=2, **TINY)
    report = load_pretrained(model, str(path))
    state = model.state_dict()
    assert report.missing == [] and report.unexpected == [] and report.expected_missing == []
    assert sorted(report.loaded) == sorted(state)
    assert sorted(report.ignored) == sorted(
        [k for k in sd if k.startswith("fc.") or k.endswith("num_batches_tracked")])
    for key in state:
        torch.testing.assert_close(state[key], sd[key], rtol=0, atol=0, msg=key)


def test_bn_model_keeps_num_batches_tracked(tmp_path):
    sd = torchvision_resnet_state_dict(18)
    torch.save(sd, tmp_path / "tv.pth")
    model = tiny(norm="bn", freeze_at=0)
    report = load_pretrained(model, str(tmp_path / "tv.pth"))
    assert "layer1.0.bn1.num_batches_tracked" in report.loaded
    assert model.layer1[0].bn1.num_batches_tracked.item() == 1000
    assert report.ignored == ["fc.weight", "fc.bias"]


def test_missing_unexpected_and_stride_warning_are_reported(tmp_path, caplog):
    sd = torchvision_resnet_state_dict(50)
    del sd["layer3.1.conv2.weight"]
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "ckpt.pth")  # wrapped checkpoints are accepted
    model = ResNet(depth=50, stride_in_1x1=True, freeze_at=0, **TINY)
    before = model.layer3[1].conv2.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="dcn_det.weights"):
        report = load_pretrained(model, str(tmp_path / "ckpt.pth"))
    assert report.missing == ["layer3.1.conv2.weight"]
    assert report.unexpected == ["layer9.0.conv1.weight"]
    assert torch.equal(model.layer3[1].conv2.weight, before)
    text = caplog.text
    assert "lack 1 model tensors" in text and "layer3.1.conv2.weight" in text
    assert "layer9.0.conv1.weight" in text
    assert "stride_in_1x1=True" in text


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    sd = torchvision_resnet_state_dict(18, width=16)  # model below has width 8
    torch.save(sd, tmp_path / "wide.pth")
    model = tiny()
    before = model.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"conv1\.weight: file has \(16, 3, 7, 7\), "
                                         r"model needs \(8, 3, 7, 7\)"):
        load_pretrained(model, str(tmp_path / "wide.pth"))
    assert torch.equal(model.conv1.weight, before)  # nothing half-loaded


def test_truncated_missing_and_non_state_dict_files(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(torchvision_resnet_state_dict(18), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"could not read pretrained weights .*cut\.pth"):
        load_pretrained(tiny(), str(cut))
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_pretrained(tiny(), str(tmp_path / "nope.pth"))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth.*state dict.*got list"):
        load_pretrained(tiny(), str(tmp_path / "list.pth"))


def test_build_backbone_reads_config_and_loads_weights(tmp_path):
    sd = torchvision_resnet_state_dict(18)
    torch.save(sd, tmp_path / "tv.pth")
    cfg = BackboneConfig(depth=18, width_mult=0.125, stride_in_1x1=False, freeze_at=2,
                         res5_dilation=2, pretrained=str(tmp_path / "tv.pth"))
    model = build_backbone(cfg)
    assert model.out_features == ["res4", "res5"]
    assert model.out_strides == {"res4": 16, "res5": 16}
    assert model.out_channels == {"res4": 32, "res5": 64}
    assert torch.equal(model.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    assert not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone(dataclasses.replace(cfg, pretrained="missing.pth"))


# ---------------------------------------------------------------- deformable stages
# These need the compiled ops (dcn_det.ops); they import them inside the test so the rest of
# the file runs without the extension, but fail (not skip) when it is missing.

DEFORM = dict(deform_stages=["res3", "res4", "res5"], deform_offset_groups=4)


def _deform_classes():
    from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d
    return DeformConv2d, ModulatedDeformConv2d


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("modulated", [False, True])
def test_deform_stages_build_the_right_convs(depth, modulated):
    deform_cls = _deform_classes()[1 if modulated else 0]
    model = tiny(depth=depth, deform_modulated=modulated, deform_offset_lr_mult=0.1,
                 deform_stages=["res4", "res5"], deform_offset_groups=4, res5_dilation=2)
    maps_per_tap = 3 if modulated else 2
    for name, stage in model.stages():
        for block in stage:
            if name in ("res4", "res5"):
                assert type(block.conv2) is deform_cls, name
                assert block.conv2.conv_offset.out_channels == maps_per_tap * 4 * 9
                assert block.conv2.conv_offset.lr_mult == 0.1
                assert not block.conv2.conv_offset.weight.any()
                assert not block.conv2.conv_offset.bias.any()
            else:
                assert type(block.conv2) is nn.Conv2d, name
            # Only conv2 is ever deformable; in a BasicBlock conv1 keeps the stride.
            assert type(block.conv1) is nn.Conv2d


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("modulated", [False, True])
def test_zero_offsets_equal_the_plain_backbone(depth, modulated):
    """With zero offsets a deformable conv is its plain conv. A modulated one also has mask
    sigmoid(0) = 0.5, i.e. it equals a plain conv with half the weight (the convs are
    bias-free), so the plain twin gets conv2.weight * 0.5 in the deformable stages."""
    common = dict(depth=depth, res5_dilation=2, freeze_at=0)
    deform = tiny(deform_modulated=modulated, **DEFORM, **common).double().eval()
    plain = tiny(**common).double().eval()
    randomize_norms(deform)
    state = {k: v for k, v in deform.state_dict().items() if ".conv_offset." not in k}
    if modulated:
        for name, stage in deform.stages():
            if name in DEFORM["deform_stages"]:
                for b in range(len(stage)):
                    key = f"layer{int(name[-1]) - 1}.{b}.conv2.weight"
                    state[key] = state[key] * 0.5
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        got, want = deform(x), plain(x)
    for name in ("res4", "res5"):
        assert want[name].abs().max() > 1e-3  # a non-trivial comparison
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradients_reach_the_offset_convs(modulated):
    model = tiny(deform_modulated=modulated, deform_stages=["res4", "res5"],
                 deform_offset_groups=2, res5_dilation=2).double()
    randomize_norms(model)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    probe = {k: torch.randn(1, c, 2, 2, dtype=torch.float64)
             for k, c in model.out_channels.items()}

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        out = model(x)
        sum((out[k] * probe[k]).sum() for k in out).backward()
        return out, {n: p.grad for n, p in model.named_parameters() if "conv_offset" in n}

    out0, grads = loss_and_grads()
    assert len(grads) == 2 * (2 + 2)  # weight and bias of 4 blocks' offset convs
    # Zero-initialised offset convs still receive a gradient: d(out)/d(offset) is the image
    # gradient of the sampled input, which is non-zero on a random input.
    for name, g in grads.items():
        if name.endswith("weight"):
            assert g is not None and g.abs().max() > 0, name
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name and name.endswith("weight"):
                p.normal_(0, 0.05)
    out1, grads = loss_and_grads()
    assert (out1["res5"] - out0["res5"]).abs().max() > 1e-6  # offsets now move samples
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().max() > 0, name


@pytest.mark.parametrize("modulated", [False, True])
def test_torchvision_weights_into_a_deformable_backbone(tmp_path, modulated):
    sd = torchvision_resnet_state_dict(50)
    torch.save(sd, tmp_path / "tv.pth")
    model = ResNet(depth=50, stride_in_1x1=False, deform_modulated=modulated,
                   res5_dilation=2, **DEFORM, **TINY)
    report = load_pretrained(model, str(tmp_path / "tv.pth"))
    offset_keys = sorted(k for k in model.state_dict() if ".conv_offset." in k)
    assert len(offset_keys) == 2 * (4 + 6 + 3)
    assert sorted(report.expected_missing) == offset_keys
    assert report.missing == [] and report.unexpected == []
    # The main weight of the deformable conv2 has torchvision's name and gets its value.
    torch.testing.assert_close(model.layer3[5].conv2.weight.detach(),
                               sd["layer3.5.conv2.weight"], rtol=0, atol=0)
    for key in offset_keys:
        assert not model.state_dict()[key].any(), key


def test_build_backbone_with_modulated_deformable_res5():
    _, modulated_cls = _deform_classes()
    cfg = BackboneConfig(depth=50, width_mult=0.125, deform_stages=("res5",),
                         deform_modulated=True, deform_offset_groups=4,
                         deform_offset_lr_mult=0.5)
    model = build_backbone(cfg)
    assert all(type(b.conv2) is modulated_cls for b in model.layer4)
    assert all(type(b.conv2) is nn.Conv2d for b in model.layer3)
    assert model.layer4[0].conv2.conv_offset.lr_mult == 0.5
    out = model(torch.randn(1, 3, 32, 32))
    assert out["res5"].shape == (1, 256, 2, 2)
