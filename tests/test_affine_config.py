"""``model.backbone.deform_offset_mode: affine`` end to end: config, build, one training step,
offset capture, inference files, torch.export and ONNX."""
import os

import pytest
import torch

from dcn_det.analysis import (OffsetCapture, compose_sampling_points, effective_dilation,
                              sampling_locations)
from dcn_det.config import ConfigError, load_config
from dcn_det.engine.optim import param_groups
from dcn_det.export import export_program, program_to_onnx
from dcn_det.io.model_file import build_inference_model, export_inference_file, read_model_file
from dcn_det.modeling import build_model
from dcn_det.modeling.backbone import ResNet
from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "demo", "rfcn_dcn_synthetic.yaml")
# A tiny R-FCN with deformable res4 and res5 (4 offset groups, dilated res5).
SMALL = ["model.backbone.depth=18", "model.backbone.width_mult=0.125", "model.backbone.norm=bn",
         "model.backbone.pretrained=''", "model.backbone.deform_stages=[res4, res5]",
         "model.backbone.deform_offset_groups=4", "model.backbone.deform_offset_lr_mult=0.25",
         "model.rpn.conv_channels=16", "model.rpn.pre_nms_topk_train=200",
         "model.rpn.post_nms_topk_train=50", "model.rpn.pre_nms_topk_test=200",
         "model.rpn.post_nms_topk_test=50", "model.head.conv_channels=32",
         "model.head.batch_size_per_image=32", "model.num_classes=3",
         "data.min_size_test=64", "data.max_size_test=96", "data.test.synthetic.num_classes=3"]


def small_cfg(mode="affine", modulated=False):
    return load_config(CONFIG, SMALL + [f"model.backbone.deform_offset_mode={mode}",
                                        f"model.backbone.deform_modulated={modulated}"])


def deform_convs(model):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (DeformConv2d, ModulatedDeformConv2d))]


def affine_model(modulated=False, seed=0):
    """An eval-mode affine model whose offset branches are random (so offsets matter)."""
    torch.manual_seed(seed)
    cfg = small_cfg(modulated=modulated)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for _, conv in deform_convs(model):
            conv.conv_offset.weight.normal_(0.0, 0.01)
            conv.conv_offset.bias.normal_(0.0, 0.1)
    return model, cfg


def test_default_is_free_and_bad_values_are_named():
    assert load_config(CONFIG).model.backbone.deform_offset_mode == "free"
    cfg = small_cfg()
    assert cfg.model.backbone.deform_offset_mode == "affine"
    assert cfg.to_dict()["model"]["backbone"]["deform_offset_mode"] == "affine"
    with pytest.raises(ConfigError, match=r"deform_offset_mode[\s\S]*'shear'"):
        load_config(CONFIG, ["model.backbone.deform_offset_mode=shear"])


def test_resnet_names_a_bad_mode_even_without_deformable_stages():
    for stages in ([], ["res5"]):
        with pytest.raises(ValueError, match="deform_offset_mode='shear'"):
            ResNet(depth=18, width_mult=0.125, deform_stages=stages, deform_offset_mode="shear")


@pytest.mark.parametrize("modulated", [False, True])
def test_affine_config_builds_the_affine_convs(modulated):
    model = build_model(small_cfg(modulated=modulated).model)
    free = build_model(small_cfg("free", modulated).model)
    convs = deform_convs(model)
    cls = ModulatedDeformConv2d if modulated else DeformConv2d
    assert len(convs) == 2 + 2  # res4 and res5 of a ResNet-18
    groups, taps = 4, 9
    mask = groups * taps if modulated else 0
    for (_, conv), (_, twin) in zip(convs, deform_convs(free)):
        assert type(conv) is cls and conv.offset_mode == "affine"
        assert conv.conv_offset.out_channels == 6 * groups + mask
        assert twin.conv_offset.out_channels == 2 * groups * taps + mask
        assert conv.conv_offset.lr_mult == 0.25
        if not modulated:
            assert conv.conv_offset.weight.numel() * (2 * taps * groups) == \
                twin.conv_offset.weight.numel() * (6 * groups)
    # The optimizer gives the offset convs their multiplier in affine mode too.
    groups_by_name = {g["name"]: g["lr"] for g in param_groups(
        model, base_lr=0.1, weight_decay=0.0, weight_decay_norm=0.0, bias_lr_factor=1.0)}
    offset_lrs = [lr for name, lr in groups_by_name.items() if "conv_offset.weight" in name]
    assert offset_lrs == pytest.approx([0.025] * len(convs))


@pytest.mark.parametrize("modulated", [False, True])
def test_one_training_step_reaches_the_offset_convs(modulated):
    torch.manual_seed(0)
    cfg = small_cfg(modulated=modulated)
    model = build_model(cfg.model).train()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 90.0]]),
                "labels": torch.tensor([0, 2])}]
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss), losses
    loss.backward()
    convs = deform_convs(model)
    for name, conv in convs:
        grad = conv.conv_offset.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0, name
    # A step of SGD moves the affine parameters off zero.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert any(conv.conv_offset.weight.any() for _, conv in convs)


@pytest.mark.parametrize("modulated", [False, True])
def test_capture_on_an_affine_detector_gives_per_tap_offsets(modulated):
    model, _ = affine_model(modulated)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    with OffsetCapture(model) as cap, torch.no_grad():
        model([image])
    records = cap.ordered_records()
    assert len(records) == 4
    for rec, (_, conv) in zip(records, deform_convs(model)):
        assert rec.offset.shape[1] == 2 * 4 * 9
        assert (rec.mask is not None) == modulated
        ed = effective_dilation(rec)
        assert ed.shape[1] == 4 and torch.isfinite(ed).all()
        # The recorded offsets are the expansion of affine parameters: within one group, the
        # per-tap offsets are an affine function of the tap position, so the second
        # differences along a row and a column of the 3x3 grid vanish.
        off = rec.offset.reshape(rec.offset.shape[0], 4, 3, 3, 2, *rec.output_hw)
        torch.testing.assert_close(off[:, :, :, 0] - 2 * off[:, :, :, 1] + off[:, :, :, 2],
                                   torch.zeros_like(off[:, :, :, 0]), rtol=0, atol=1e-5)
        torch.testing.assert_close(off[:, :, 0] - 2 * off[:, :, 1] + off[:, :, 2],
                                   torch.zeros_like(off[:, :, 0]), rtol=0, atol=1e-5)
        assert off.abs().max() > 1e-3
    # Composition through res5's two layers reads those per-tap offsets like free ones.
    top = records[-1]
    composed = compose_sampling_points(records[-2:], [[32.0, 16.0]], group=1)
    assert [p.shape for p in composed.points] == [(1, 9, 2), (1, 81, 2)]
    unit = composed.units / top.output_stride
    pts, _ = sampling_locations(top, unit, group=1)
    torch.testing.assert_close(composed.points[0], pts * top.input_stride)


def test_inference_file_round_trip_of_an_affine_model(tmp_path):
    model, cfg = affine_model(modulated=True)
    ckpt = {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 1,
            "class_names": ["disc", "square", "triangle"]}
    path = export_inference_file(ckpt, str(tmp_path / "affine.pth"))
    cfg2, state, _ = read_model_file(path)
    assert cfg2.model.backbone.deform_offset_mode == "affine"
    loaded = build_inference_model(cfg2, state)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        want, got = model([image])[0], loaded([image])[0]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[key], want[key])


def _assert_same(got, want):
    for g, name in zip(got, ("boxes", "scores", "labels")):
        assert g.dtype == want[name].dtype and g.shape == want[name].shape, name
        torch.testing.assert_close(g, want[name], rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # ONNX export
@pytest.mark.parametrize("cls", [DeformConv2d, ModulatedDeformConv2d])
def test_onnx_affine_conv_matches_onnxruntime(tmp_path, cls):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from dcn_det.export import _onnx_translation_table

    conv = cls(8, 6, 3, padding=2, dilation=2, offset_groups=2, offset_mode="affine").eval()
    torch.nn.init.normal_(conv.conv_offset.weight, std=0.3)
    x = torch.randn(1, 8, 9, 11)
    path = str(tmp_path / "affine.onnx")
    torch.onnx.export(conv, (x,), path, dynamo=True, opset_version=19,
                      custom_translation_table=_onnx_translation_table())
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), conv(x).detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # torch.export and ONNX export of a detector
def test_affine_detector_exports_with_torch_export_and_to_onnx(tmp_path):
    """The program (dynamic size) gives the eager detections at two sizes, and its ONNX
    translation has one standard DeformConv per affine deformable conv."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model, _ = affine_model(modulated=True)
    example = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    program = export_program(model, example, None)
    for h, w in [(64, 96), (80, 64)]:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        with torch.no_grad():
            want = model([img])[0]
            assert len(want["scores"]) > 0
            _assert_same(program.module()(img), want)
    path = program_to_onnx(program, str(tmp_path / "m.onnx"), optimize=False)
    kinds = [(n.domain or "ai.onnx", n.op_type) for n in onnx.load(path).graph.node]
    assert kinds.count(("ai.onnx", "DeformConv")) == 4
