"""TwoStageDetector with small stand-in parts: preprocessing, training, inference, rescaling."""
import pathlib

import pytest
import torch
from torch import nn

from dcn_det.config import load_config
from dcn_det.modeling import build_model
from dcn_det.modeling.detector import TwoStageDetector
from dcn_det.modeling.heads.roi_heads import RoIHeads
from dcn_det.modeling.rpn import RPN
from tests.matrix import voc_twins_slow


class TinyBackbone(nn.Module):
    """TEST-ONLY backbone: one stride-16 conv (res4) and a 1x1 conv on it (res5)."""

    out_channels = {"res4": 8, "res5": 6}
    out_strides = {"res4": 16, "res5": 16}

    def __init__(self):
        super().__init__()
        self.c4 = nn.Conv2d(3, 8, 16, stride=16)
        self.c5 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        r4 = torch.relu(self.c4(x))
        return {"res4": r4, "res5": torch.relu(self.c5(r4))}


class TinyHead(nn.Module):
    """TEST-ONLY box head: mean of the RoI's feature window, then linear layers."""

    def __init__(self, c, k):
        super().__init__()
        self.k = k
        self.cls = nn.Linear(c + 4, k + 1)
        self.box = nn.Linear(c + 4, 4)

    def forward(self, feature, rois):
        pooled = feature.mean(dim=(2, 3))[rois[:, 0].long()]
        x = torch.cat((pooled, rois[:, 1:] / 100), dim=1)
        return self.cls(x), self.box(x).view(-1, 1, 4)


def _detector(k=3):
    rpn = RPN(in_channels=8, conv_channels=8, anchor_scales=(2, 4), pre_nms_topk_train=100,
              post_nms_topk_train=30, pre_nms_topk_test=100, post_nms_topk_test=30)
    heads = RoIHeads(box_head=TinyHead(6, k), num_classes=k, batch_size_per_image=32,
                     score_thresh=0.0)
    return TwoStageDetector(backbone=TinyBackbone(), rpn=rpn, roi_heads=heads,
                            pixel_mean=[100.0, 110.0, 120.0], pixel_std=[50.0, 60.0, 70.0],
                            size_divisibility=32)


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (3, 64, 100), dtype=torch.uint8, generator=g)]


TARGETS = [{"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0], [30.0, 20.0, 80.0, 60.0]]),
            "labels": torch.tensor([0, 2])},
           {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


def test_preprocess_normalises_then_pads():
    det = _detector()
    imgs = _images()
    batch = det.preprocess(imgs)
    assert batch.tensor.shape == (2, 3, 96, 128)
    assert batch.image_sizes == [(70, 90), (64, 100)]
    mean = torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1)
    std = torch.tensor([50.0, 60.0, 70.0]).view(3, 1, 1)
    torch.testing.assert_close(batch.tensor[0, :, :70, :90], (imgs[0].float() - mean) / std)
    assert batch.tensor[0, :, 70:].abs().sum() == 0 and batch.tensor[1, :, :, 100:].abs().sum() == 0


def test_training_step_returns_finite_losses_and_gradients():
    det = _detector().train()
    losses = det(_images(), TARGETS)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.c4.weight", "rpn.head.cls_logits.weight", "roi_heads.box_head.cls.weight"):
        assert dict(det.named_parameters())[name].grad.abs().sum() > 0, name


def test_eval_outputs_and_rescaling_to_original_size():
    det = _detector().eval()
    with torch.no_grad():
        out = det(_images())
        scaled = det(_images(), orig_sizes=[(140, 270), (64, 100)])
        from_targets = det(_images(), [{"orig_size": (35, 45)}, {}])
    assert len(out) == 2
    for d in out:
        assert d["boxes"].dim() == 2 and d["boxes"].shape[1] == 4
        assert d["scores"].shape == d["labels"].shape == (d["boxes"].shape[0],)
        assert d["labels"].dtype == torch.int64
    assert out[0]["boxes"].shape[0] > 0
    # Image 0 is 70 x 90 -> 140 x 270: x scaled by 3, y by 2. Image 1 is unchanged.
    torch.testing.assert_close(scaled[0]["boxes"], out[0]["boxes"] * torch.tensor([3.0, 2, 3, 2]))
    torch.testing.assert_close(scaled[1]["boxes"], out[1]["boxes"])
    torch.testing.assert_close(from_targets[0]["boxes"], out[0]["boxes"] * 0.5)
    torch.testing.assert_close(scaled[0]["scores"], out[0]["scores"])


def test_postprocess_keeps_empty_detections_well_shaped():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}
    out = TwoStageDetector.postprocess([empty], [(10, 10)], [(20, 30)])
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="orig_sizes"):
        TwoStageDetector.postprocess([empty], [(10, 10)], [(20, 30), (1, 1)])


def test_bad_inputs_are_reported():
    det = _detector().train()
    imgs = _images()
    with pytest.raises(ValueError, match=r"images\[1\] must have dtype uint8"):
        det([imgs[0], imgs[1].float()], TARGETS)
    with pytest.raises(ValueError, match=r"images\[0\] must be a uint8 RGB tensor \(3, H, W\), got \(1, 70, 90\)"):
        det([imgs[0][:1]], TARGETS[:1])
    with pytest.raises(ValueError, match="non-empty list"):
        det([], [])
    with pytest.raises(ValueError, match="one target per image"):
        det(imgs)
    bad = [TARGETS[0], {"boxes": torch.zeros(1, 4), "labels": torch.tensor([3])}]
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\] must be in 0..2"):
        det(imgs, bad)
    bad = [TARGETS[0], {"boxes": torch.zeros(1, 5), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\].*\(1, 5\)"):
        det(imgs, bad)
    with pytest.raises(ValueError, match="pixel_std"):
        TwoStageDetector(backbone=TinyBackbone(), rpn=det.rpn, roi_heads=det.roi_heads,
                         pixel_mean=[0, 0, 0], pixel_std=[1, 0, 1])
    det.head_in_feature = "res3"
    with pytest.raises(RuntimeError, match="'res3'"):
        det(imgs, TARGETS)


# ---------------------------------------------------------------------------------------
# Every config under configs/ with the real backbone and heads (build_model).

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
# ablation/studies/ holds variants files of tools/ablate.py, which are not configs; the FPN
# configs (faster_rcnn_fpn/, demo/faster_rcnn_fpn_*) have tests/modeling/test_fpn_configs.py.
CONFIGS = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml")
                 if "_base_" not in p.parts and "studies" not in p.parts
                 and "faster_rcnn_fpn" not in str(p.relative_to(CONFIG_DIR)))
PAPER_CONFIGS = [c for c in CONFIGS if not c.startswith(("demo/", "ablation/"))]

# Shrinks a config so one training and one inference step take well under a second.
SMALL = ["model.backbone.depth=18", "model.backbone.width_mult=0.125",
         "model.backbone.pretrained=''", "model.rpn.conv_channels=16",
         "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=50",
         "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
         "model.head.conv_channels=32", "model.head.batch_size_per_image=32"]
# Faster R-CNN's own head field, shrunk too.
SMALL_FAST_RCNN = ["model.head.fc_dim=32"]


def load_small(name: str):
    """``configs/<name>`` shrunk by SMALL (and SMALL_FAST_RCNN for a Faster R-CNN head)."""
    path = str(CONFIG_DIR / name)
    extra = SMALL_FAST_RCNN if load_config(path).model.head.type == "fast_rcnn" else []
    return load_config(path, SMALL + extra)


def test_config_list_is_complete():
    assert len(PAPER_CONFIGS) == 20
    assert {"demo/rfcn_dcn_synthetic.yaml", "demo/faster_rcnn_dcn_synthetic.yaml",
            "ablation/rfcn_short.yaml", "ablation/rfcn_shorter.yaml"} <= set(CONFIGS)


@pytest.mark.parametrize("name", voc_twins_slow(CONFIGS))
def test_config_builds_and_runs_one_train_and_one_inference_step(name):
    cfg = load_small(name)
    model = build_model(cfg.model)
    assert isinstance(model, TwoStageDetector)
    k = cfg.model.num_classes
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 90.0]]),
                "labels": torch.tensor([0, k - 1])}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        (det,) = model(images, orig_sizes=[(192, 256)])
    assert det["boxes"].shape[1] == 4 and det["labels"].dtype == torch.int64
    assert det["scores"].shape == det["labels"].shape == (det["boxes"].shape[0],)
    assert det["boxes"].shape[0] <= cfg.model.head.detections_per_image
    if det["labels"].numel():
        assert det["labels"].min() >= 0 and det["labels"].max() < k


@pytest.mark.parametrize("name", voc_twins_slow(PAPER_CONFIGS))
def test_paper_config_builds_at_full_size(name):
    cfg = load_config(str(CONFIG_DIR / name))
    assert cfg.model.backbone.depth == 101
    # On the meta device: the real module tree and shapes without allocating or initialising.
    with torch.device("meta"):
        model = build_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    assert 40e6 < n_params < 80e6, n_params
    head = model.roi_heads.box_head
    assert model.roi_heads.num_classes == cfg.model.num_classes
    assert model.rpn.anchor_generator.num_anchors == len(cfg.model.rpn.anchor_scales) * 3
    assert type(head).__name__ == ("RFCNHead" if cfg.model.arch == "rfcn" else "FastRCNNHead")


def test_build_model_rejects_inconsistent_configs():
    # an R-FCN config switched to the Faster R-CNN head is refused when it is loaded
    with pytest.raises(ValueError, match="not a field of the 'fast_rcnn' head"):
        load_config(str(CONFIG_DIR / "demo/rfcn_dcn_synthetic.yaml"),
                    SMALL + ["model.head.type=fast_rcnn"])
    cfg = load_config(str(CONFIG_DIR / "demo/rfcn_dcn_synthetic.yaml"),
                      SMALL + ["model.rpn.anchor_stride=32"])
    with pytest.raises(ValueError, match="anchor_stride=32"):
        build_model(cfg.model)


@pytest.mark.parametrize("name", ["demo/rfcn_dcn_synthetic.yaml",
                                  "demo/faster_rcnn_dcn_synthetic.yaml"])
def test_rois_and_boxes_stay_float32_under_autocast(name):
    # CPU autocast to bfloat16 stands in for CUDA AMP: the convolutions run in half, but RoIs,
    # proposals and decoded boxes (pixel coordinates) must stay float32.
    cfg = load_small(name)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    seen, rpn_out = [], []
    model.roi_heads.box_head.register_forward_pre_hook(
        lambda module, args: seen.append((args[0].dtype, args[1].dtype)))
    model.rpn.head.register_forward_hook(lambda m, args, out: rpn_out.append(out[1].dtype))
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([0])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()
        losses = model(images, targets)
        model.eval()
        with torch.no_grad():
            proposals, _ = model.rpn(model.preprocess(images),
                                     model.backbone(model.preprocess(images).tensor)["res4"])
            det = model(images)[0]
    assert seen and all(rois == torch.float32 for _, rois in seen)
    assert rpn_out and all(d == torch.bfloat16 for d in rpn_out)  # the RPN did run in half
    assert all(p.dtype == torch.float32 for p in proposals)
    assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
    assert all(torch.isfinite(v) for v in losses.values())
