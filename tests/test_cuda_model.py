"""A full training iteration of the deformable detectors on CUDA with AMP (GPU machines only)."""
import os

import pytest
import torch

from dcn_det.config import load_config
from dcn_det.modeling import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("config", ["configs/rfcn/rfcn_r101_dcn_dpool_coco.yaml",
                                    "configs/faster_rcnn/faster_rcnn_r101_dcn_dpool_coco.yaml",
                                    "configs/rfcn/rfcn_r101_dcnv2_coco.yaml"])
def test_training_iteration_cuda_amp(config):
    cfg = load_config(os.path.join(ROOT, config))
    torch.manual_seed(0)
    model = build_model(cfg.model).cuda().train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                          momentum=0.9)
    # a modest initial scale: the default 2**16 overflows float16 at first and skips steps
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 8)
    images = [torch.randint(0, 256, (3, 600, 800), dtype=torch.uint8, device="cuda"),
              torch.randint(0, 256, (3, 512, 900), dtype=torch.uint8, device="cuda")]
    targets = [{"boxes": torch.tensor([[50.0, 60.0, 300.0, 400.0]], device="cuda"),
                "labels": torch.tensor([5], device="cuda")},
               {"boxes": torch.tensor([[10.0, 20.0, 200.0, 100.0], [400, 100, 880, 500]],
                                      device="cuda"),
                "labels": torch.tensor([1, 70], device="cuda")}]
    offsets = [p for n, p in model.named_parameters() if "offset" in n]
    assert offsets, "the deformable model has offset layers"
    before = [p.detach().clone() for p in offsets]
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            losses = model(images, targets)
        total = sum(losses.values())
        assert torch.isfinite(total), losses
        opt.zero_grad()
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        grads = [p.grad for p in offsets if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reaches the offsets"
        scaler.step(opt)
        scaler.update()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, offsets))
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
