"""Per-image inference and per-iteration training time of the paper's detectors.

Usage::

    python benchmarks/model.py [--device cpu|cuda] [--depths 101 50] [--repeats 3]
                               [--models R-FCN "Faster R-CNN" FPN]
                               [--amp] [--output out/bench_model.json]

For R-FCN and Faster R-CNN, each at the given ResNet depths, it times the plain model (the
paper's baseline config) and the full deformable one (deformable conv in res5 + deformable
pooling); for Faster R-CNN with FPN, the plain FPN model and the one with deformable conv in
res3-res5 and deformable pooling on P2-P5 (no published GPU ratio); on one 600x1000 image with random weights (COCO heads, 81 classes), and prints the
DCN/plain ratio beside the paper's Table 4 (on a GPU: R-FCN 0.143 s -> 0.169 s, x1.18; Faster
R-CNN 0.147 s -> 0.192 s, x1.31). Training iterations use one image and the COCO training
settings; inference uses the test settings (300 proposals; 1000 with FPN).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.config import load_config  # noqa: E402
from dcn_det.modeling import build_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # name: (plain config, deformable config, paper's GPU ratio)
    "R-FCN": ("configs/rfcn/rfcn_r101_coco.yaml", "configs/rfcn/rfcn_r101_dcn_dpool_coco.yaml",
              0.169 / 0.143),
    "Faster R-CNN": ("configs/faster_rcnn/faster_rcnn_r101_coco.yaml",
                     "configs/faster_rcnn/faster_rcnn_r101_dcn_dpool_coco.yaml", 0.192 / 0.147),
    "FPN": ("configs/faster_rcnn_fpn/faster_rcnn_fpn_r101_coco.yaml",
            "configs/faster_rcnn_fpn/faster_rcnn_fpn_r101_dcn_dpool_coco.yaml", None),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_s(fn, device, repeats):
    for _ in range(2 if device.type == "cuda" else 1):
        fn()  # warm-up (allocator, cudnn autotune, first-call overheads)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tame_random_weights(model):
    """Zeroes the last norm scale of every residual block (each block starts as identity).

    With random weights and FrozenBN (the identity until pretrained statistics are loaded) a
    101-layer net's activations overflow to inf/NaN, and NaN scores would change how many
    proposals survive NMS; timings on such a net would not be the real ones. The FLOPs are
    unchanged.
    """
    for name, module in model.named_modules():
        if name.startswith("backbone.layer") and name.endswith(".bn3"):
            module.weight.data.zero_()


def time_model(config, depth, device, repeats, amp):
    """(inference s/image, training s/iteration) of ``config`` at ResNet-``depth``."""
    cfg = load_config(os.path.join(ROOT, config), [f"model.backbone.depth={depth}"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    tame_random_weights(model)
    model.to(device)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 600, 1000), dtype=torch.uint8, generator=g).to(device)
    target = {"boxes": torch.tensor([[100.0, 120.0, 400.0, 380.0], [500.0, 50.0, 900.0, 560.0],
                                     [30.0, 300.0, 200.0, 590.0]], device=device),
              "labels": torch.tensor([3, 17, 42], device=device)}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                          momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")

    def infer():
        with torch.no_grad(), autocast:
            model([image])

    def train_step():
        with autocast:
            losses = model([image], [target])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    model.eval()
    t_inf = _median_s(infer, device, repeats)
    model.train()
    t_train = _median_s(train_step, device, repeats)
    return t_inf, t_train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--depths", type=int, nargs="+", default=[101, 50])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="which detectors to time (default: all)")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        machine = torch.cuda.get_device_name()
    else:
        machine = f"CPU, {torch.get_num_threads()} threads"
    rows = []
    print(f"device: {machine}  torch {torch.__version__}  600x1000, 1 image, amp={args.amp}")
    print(f"{'model':<14}{'depth':>6}{'plain inf s':>12}{'dcn inf s':>11}{'ratio':>7}"
          f"{'paper':>7}{'plain train s':>14}{'dcn train s':>12}{'ratio':>7}")
    for name in args.models:
        plain_cfg, dcn_cfg, paper = MODELS[name]
        for depth in args.depths:
            pi, pt = time_model(plain_cfg, depth, device, args.repeats, args.amp)
            di, dt = time_model(dcn_cfg, depth, device, args.repeats, args.amp)
            row = dict(model=name, depth=depth, plain_infer_s=pi, dcn_infer_s=di,
                       infer_ratio=di / pi, paper_ratio=paper, plain_train_s=pt,
                       dcn_train_s=dt, train_ratio=dt / pt)
            rows.append(row)
            shown = f"{paper:7.2f}" if paper is not None else f"{'-':>7}"
            print(f"{name:<14}{depth:>6}{pi:12.3f}{di:11.3f}{di / pi:7.2f}{shown}"
                  f"{pt:14.3f}{dt:12.3f}{dt / pt:7.2f}", flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"machine": machine, "torch": torch.__version__, "amp": args.amp,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
