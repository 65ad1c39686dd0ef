"""Every config under configs/ exports with ``torch.export`` and to ONNX, and both give the
eager detections (tolerance: docs/DESIGN.md section 13). A plain run exports one config per
architecture (:data:`PRODUCT_PATH`, :data:`DYNAMIC`, :data:`REPRESENTATIVES`);
``DCN_DET_TEST_EXPORT_ALL=1`` runs every config.

The configs are found by glob, so a new one is covered without editing this file. Each runs
reduced (:data:`REDUCE`: ResNet-18 at 1/8 width, a tiny image, few proposals, random weights
with a fixed seed and non-zero offsets, score threshold 0 so that every RoI gives
detections); the paper's structure (heads, deformable stages, modulated convs, pooling) is
kept. Configs whose reduced models are identical (COCO and VOC differ in the number of classes
and the anchors, both reduced alike) share one export; each still runs its own eager model
against the shared files.

Time: an export with dynamic H, W costs about twice one at a fixed size, and the ONNX
optimizer (the product path, :func:`export_onnx`) about as much again. The R-FCN demo config
(deformable conv and pooling) takes the product path and the deformable FPN one the dynamic
path without the optimizer (the FPN anchors and level assignment at sizes other than the
traced one), both checked at two image sizes; the other configs export at the example's size
without the optimizer, unless ``DCN_DET_TEST_EXPORT_FULL=1`` asks for the product path
everywhere.
"""
import glob
import os
import shutil
from typing import Dict, List

import pytest
import torch
import yaml

from dcn_det.config import load_config
from dcn_det.export import MIN_SIDE, export_program, load_program, min_side, program_to_onnx
from dcn_det.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = {"_base_", "model", "data", "solver", "test", "runtime"}


def config_files() -> List[str]:
    """Every YAML file under configs/ that is a config (not a base, variants or tests file)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if f"{os.sep}_base_{os.sep}" in rel:
            continue
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        if isinstance(doc, dict) and set(doc) <= SECTIONS:  # variants files map names to lists
            found.append(rel)
    return found


CONFIGS = config_files()

# The reduction: small enough that one export takes seconds, and every discrete step
# (proposal top-k, NMS, score threshold) far from a tie, so ONNX, the program and eager
# keep the same boxes (DESIGN section 13).
REDUCE = ["model.backbone.depth=18", "model.backbone.width_mult=0.125",
          "model.backbone.gn_groups=4", "model.backbone.pretrained=''",
          "model.rpn.conv_channels=16", "model.rpn.pre_nms_topk_test=60",
          "model.rpn.post_nms_topk_test=12", "model.head.score_thresh=0.0",
          "model.num_classes=3", "data.test.synthetic.num_classes=3",
          "data.min_size_test=64", "data.max_size_test=96"]
# By architecture (the sections are tagged, so a field of the other one is an error).
REDUCE_BY_HEAD = {
    "rfcn": ["model.rpn.anchor_scales=[1,2,4]", "model.head.conv_channels=32"],
    "fast_rcnn": ["model.rpn.anchor_scales=[1,2,4]", "model.head.conv_channels=32",
                  "model.head.fc_dim=32"],
    "fast_rcnn_fpn": ["model.neck.out_channels=16", "model.head.fc_dim=32",
                      "data.min_size_test=72"],
}
# The example (traced), then other sizes (dynamic H, W); FPN programs take sides >= 65
# (export.min_side), and the smallest is checked: P6 has 2 cells there.
SIZES = [(64, 96), (80, 64)]
SIZES_FPN = [(72, 96), (80, 68), (65, 131)]
FULL = os.environ.get("DCN_DET_TEST_EXPORT_FULL") == "1"
PRODUCT_PATH = [os.path.join("configs", "demo", "rfcn_dcn_synthetic.yaml")]
DYNAMIC = [os.path.join("configs", "faster_rcnn_fpn", "faster_rcnn_fpn_r50_dcn_dpool_coco.yaml")]


def reduced_model(rel: str):
    """The config's model, reduced, with random weights (seed 0) and offsets that matter."""
    path = os.path.join(ROOT, rel)
    head = load_config(path).model.head.type
    cfg = load_config(path, REDUCE + REDUCE_BY_HEAD[head])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "offset" in name:  # zero-initialised: deformable = plain until trained
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return cfg, model


def images(model) -> List[torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
            for h, w in (SIZES_FPN if min_side(model) > MIN_SIDE else SIZES)]


def assert_same_detections(got, want: Dict[str, torch.Tensor], what: str) -> None:
    """Same number of detections, same labels in the same order, scores and boxes within
    the tolerance of DESIGN section 13."""
    boxes, scores, labels = (torch.as_tensor(g) for g in got)
    assert labels.dtype == torch.int64 and boxes.dtype == scores.dtype == torch.float32, what
    assert boxes.shape == want["boxes"].shape, (what, boxes.shape, want["boxes"].shape)
    assert torch.equal(labels, want["labels"]), what
    torch.testing.assert_close(scores, want["scores"], rtol=1e-4, atol=1e-5, msg=what)
    torch.testing.assert_close(boxes, want["boxes"], rtol=1e-4, atol=1e-3, msg=what)


_SHARED: Dict[str, dict] = {}  # reduced model config (repr) -> exported artefacts


def _exported(cfg, model, tmp_dir, dynamic: bool, optimize: bool) -> dict:
    """The program and ONNX file of this reduced model; ``dynamic``: dynamic H, W;
    ``optimize``: the ONNX optimizer (both: what :func:`export_onnx` does). An export serves
    later requests for the same or less."""
    key = repr(cfg.model)
    have = _SHARED.get(key)
    if have is None or (dynamic and not have["dynamic"]) or (optimize and not have["optimize"]):
        pt2 = os.path.join(tmp_dir, "m.pt2")
        program = export_program(model, images(model)[0], pt2, dynamic_size=dynamic)
        onnx_path = program_to_onnx(program, os.path.join(tmp_dir, "m.onnx"), optimize=optimize)
        _SHARED[key] = {"program": program, "pt2": pt2, "onnx": onnx_path, "dynamic": dynamic,
                        "optimize": optimize}
    return _SHARED[key]


def _check_config(rel, tmp_dir, dynamic: bool, optimize: bool) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    cfg, model = reduced_model(rel)
    shared = _exported(cfg, model, tmp_dir, dynamic, optimize)
    graph = onnx.load(shared["onnx"]).graph
    assert {n.domain or "ai.onnx" for n in graph.node} == {"ai.onnx"}  # standard ops only
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" in ops
    if any(name.endswith("conv_offset.weight") for name, _ in model.named_parameters()):
        assert "DeformConv" in ops
    sess = ort.InferenceSession(shared["onnx"], providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type, inp.shape[0], len(inp.shape)) == ("image", "tensor(uint8)", 3, 3)
    if shared["dynamic"]:  # dynamic H and W (named dimensions, not numbers)
        assert all(isinstance(d, str) for d in inp.shape[1:]), inp.shape
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels"]
    saved = load_program(shared["pt2"]).module()
    traced = shared["program"].module()
    for img in images(model) if shared["dynamic"] else images(model)[:1]:
        with torch.no_grad():
            want = model([img])[0]
            assert len(want["scores"]) > 0, rel
            assert_same_detections(traced(img), want, f"{rel}: program at {tuple(img.shape)}")
            assert_same_detections(saved(img), want, f"{rel}: loaded .pt2 at {tuple(img.shape)}")
        got = sess.run(None, {"image": img.numpy()})
        assert_same_detections(got, want, f"{rel}: onnxruntime at {tuple(img.shape)}")


# The product path first, so that the configs sharing its models reuse its exports.
@pytest.mark.slow  # torch.export and ONNX export
@pytest.mark.parametrize("rel", PRODUCT_PATH)
def test_demo_config_exports_with_dynamic_size(rel, tmp_path_factory):
    _check_config(rel, str(tmp_path_factory.mktemp("export")), dynamic=True, optimize=True)


@pytest.mark.slow  # torch.export and ONNX export
@pytest.mark.parametrize("rel", DYNAMIC)
def test_config_exports_with_dynamic_size(rel, tmp_path_factory):
    _check_config(rel, str(tmp_path_factory.mktemp("export")), dynamic=True, optimize=FULL)


# With the two above, one graph per architecture (R-FCN, Faster R-CNN C4, FPN), exported in
# every run; the others differ from these by an op whose translation
# tests/export/test_onnx_ops.py checks alone. Every config with DCN_DET_TEST_EXPORT_ALL=1
# (about 15 minutes on 2 cores: run it after changing the export, an op's translation or a
# model's structure).
REPRESENTATIVES = [os.path.join("configs", "faster_rcnn", "faster_rcnn_r101_dcnv2_coco.yaml")]
ALL = os.environ.get("DCN_DET_TEST_EXPORT_ALL") == "1"


@pytest.mark.slow  # torch.export and ONNX export
@pytest.mark.parametrize("rel", CONFIGS if ALL else REPRESENTATIVES)
def test_config_exports_and_matches_eager(rel, tmp_path_factory):
    _check_config(rel, str(tmp_path_factory.mktemp("export")), dynamic=FULL, optimize=FULL)


def test_every_config_is_covered():
    """The glob finds the paper's configs and the demo and ablation ones (a config moved
    elsewhere under configs/ is still found; a variants file is not taken for a config)."""
    names = {os.path.basename(p) for p in CONFIGS}
    assert len([n for n in names if n.startswith("rfcn_r101")]) == 10
    assert len([n for n in names if n.startswith("faster_rcnn_r101")]) == 10
    assert {"rfcn_dcn_synthetic.yaml", "faster_rcnn_dcn_synthetic.yaml",
            "rfcn_short.yaml"} <= names
    assert not [n for n in names if n.endswith("_variants.yaml") or n.endswith("_tests.yaml")]
    assert set(PRODUCT_PATH + DYNAMIC + REPRESENTATIVES) <= set(CONFIGS)
    assert len([n for n in names if n.startswith("faster_rcnn_fpn_r")]) == 24


def readme_snippet() -> str:
    """The onnxruntime example of the README's "Exported models" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Exported models"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


@pytest.mark.slow  # ONNX export (shared with the demo config's test when it ran first)
def test_readme_onnxruntime_snippet(tmp_path, tmp_path_factory, monkeypatch):
    """The README's example runs as written (at the reduced model's test size) and gives the
    detections of dcn_det's own pipeline: decode, ResizeShortestEdge, model with orig_sizes."""
    pytest.importorskip("onnxruntime")
    import cv2
    import numpy as np

    from dcn_det.data.transforms import (ResizeShortestEdge, decode_image, image_to_tensor,
                                         resized_shape)

    snippet = readme_snippet()
    sizes_line = "MIN_SIZE, MAX_SIZE = 600, 1000"
    assert sizes_line in snippet
    rule = {}
    exec(snippet[:snippet.index("session = ")], rule)  # imports, sizes, the resize rule
    for h, w in [(480, 640), (1000, 300), (600, 600), (7, 2000), (333, 777)]:
        assert rule["resized_shape"](h, w) == resized_shape(h, w, 600, 1000)

    cfg, model = reduced_model(PRODUCT_PATH[0])
    shared = _exported(cfg, model, str(tmp_path_factory.mktemp("export")), dynamic=True,
                       optimize=True)
    shutil.copy(shared["onnx"], str(tmp_path / "model.onnx"))
    gen = np.random.default_rng(0)
    photo = cv2.GaussianBlur(gen.integers(0, 256, (50, 70, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo)
    monkeypatch.chdir(tmp_path)
    run = {}
    small = (cfg.data.min_size_test, cfg.data.max_size_test)
    exec(snippet.replace(sizes_line, f"MIN_SIZE, MAX_SIZE = {small[0]}, {small[1]}"), run)
    assert run["image"].shape[1:] != photo.shape[:2]  # it was resized

    rgb = decode_image("photo.jpg")
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    resized, _ = ResizeShortestEdge([small[0]], small[1])(rgb, no_boxes)
    with torch.no_grad():
        want = model([image_to_tensor(resized)], orig_sizes=[rgb.shape[:2]])[0]
    assert len(want["scores"]) > 0
    assert_same_detections((run["boxes"], run["scores"], run["labels"]), want, "README snippet")
