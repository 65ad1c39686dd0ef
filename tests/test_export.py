"""Inference files (round trip, fp16, bad and malicious files) and torch.export / ONNX export."""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcn_det.config import Config, config_from_dict, load_config
from dcn_det.io.checkpoint import CheckpointError
from dcn_det.export import export_onnx, export_program
from dcn_det.io.model_file import (FORMAT, VERSION, export_inference_file, load_inference_file,
                                   read_model_file)
from dcn_det.modeling import build_model

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Shrinks the demo configs so a forward pass on a ~64x96 image takes well under a second.
# BatchNorm (the R-FCN demo uses GroupNorm): its integer num_batches_tracked buffers exercise
# the fp16 export's "halve floating tensors only" path.
TINY = ["model.backbone.depth=18", "model.backbone.width_mult=0.125", "model.backbone.norm=bn",
        "model.backbone.pretrained=''", "model.rpn.conv_channels=16",
        "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
        "model.head.conv_channels=32", "model.num_classes=3",
        "data.min_size_test=64", "data.max_size_test=96", "data.test.synthetic.num_classes=3"]

NUM_CLASSES = 3
NAMES = ["disc", "square", "triangle"]


class TinyDetector(nn.Module):
    """TEST-ONLY stand-in with TwoStageDetector's eval contract (list of uint8 images in,
    per-image boxes/scores/labels out, ``orig_sizes`` rescaling) and a data-dependent number
    of detections (score threshold + top-k), like the real postprocess.

    It checks the export wrapper and Predictor logic independently of the real detector (whose
    exports tests/export/test_configs.py checks for every config)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.cls = nn.Conv2d(8, num_classes, 1)
        self.reg = nn.Conv2d(8, 4, 1)
        self.register_buffer("pixel_mean", torch.tensor([120.0, 115.0, 100.0]).view(3, 1, 1))
        self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))

    def forward(self, images, targets=None, orig_sizes=None):
        out = []
        for i, img in enumerate(images):
            h, w = img.shape[-2:]
            x = (img.float() - self.pixel_mean) / 60.0
            x = F.pad(x, (0, (w + 31) // 32 * 32 - w, 0, (h + 31) // 32 * 32 - h))[None]
            f = torch.relu(self.conv(x))
            prob, reg = self.cls(f).sigmoid()[0], self.reg(f)[0] * 4.0
            gh, gw = prob.shape[1:]
            ys = torch.arange(gh, dtype=torch.float32).view(gh, 1).expand(gh, gw) * 4 + 2
            xs = torch.arange(gw, dtype=torch.float32).view(1, gw).expand(gh, gw) * 4 + 2
            scores, labels = prob.max(0)
            boxes = torch.stack([xs - 6 + reg[0], ys - 6 + reg[1], xs + 6 + reg[2],
                                 ys + 6 + reg[3]], -1).reshape(-1, 4)
            scores, labels = scores.reshape(-1), labels.reshape(-1)
            keep = scores > 0.6
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            order = scores.argsort(descending=True)[:20]
            boxes, scores, labels = boxes[order], scores[order], labels[order]
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], -1)
            if orig_sizes is not None:
                oh, ow = orig_sizes[i]
                boxes = boxes * boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])
            out.append({"boxes": boxes, "scores": scores, "labels": labels.long()})
        return out


def real_tiny_model(arch: str = "rfcn"):
    """A real (random-weight) detector from the demo config, shrunk; returns (model, cfg).

    The offset layers are zero-initialised (deformable = plain at start); small random
    offsets make the deformable sampling paths matter.
    """
    small = TINY + (["model.head.fc_dim=32"] if arch == "faster_rcnn" else [])
    cfg = load_config(os.path.join(CONFIG_DIR, "demo", f"{arch}_dcn_synthetic.yaml"), small)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "offset" in name:
                p.normal_(0.0, 0.01)
    return model, cfg


def real_checkpoint(model, cfg) -> dict:
    """A checkpoint as tools/train.py writes it (with the training set's class names)."""
    return {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 5,
            "class_names": ["disc", "square", "triangle"][:cfg.model.num_classes]}


def tiny_config() -> Config:
    return config_from_dict({"model": {"num_classes": NUM_CLASSES},
                             "data": {"min_size_test": 48, "max_size_test": 80}})


def training_checkpoint(model: nn.Module, **extra) -> dict:
    return {"model": model.state_dict(), "config": tiny_config().to_dict(), "iteration": 99,
            "optimizer": {"state": {}}, **extra}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyDetector().eval()


@pytest.fixture(scope="module")
def real():
    return real_tiny_model("rfcn")


def test_inference_file_round_trip(tmp_path, real):
    model, cfg = real
    path = export_inference_file(real_checkpoint(model, cfg), str(tmp_path / "sub" / "m.pth"),
                                 class_names=NAMES)
    raw = torch.load(path, weights_only=True)  # plain safe load works without dcn_det helpers
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert set(raw) == {"format", "version", "model", "config", "class_names"}
    info = load_inference_file(path)
    assert info["config"] == cfg and info["class_names"] == NAMES
    assert set(info["model"]) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert info["model"][k].dtype == v.dtype and torch.equal(info["model"][k], v), k
    assert not [p for p in os.listdir(tmp_path / "sub") if p.startswith(".tmp")]


def test_fp16_halves_floating_tensors_only(tmp_path, real):
    model, cfg = real
    half = export_inference_file(real_checkpoint(model, cfg), str(tmp_path / "h.pth"), fp16=True)
    full = export_inference_file(real_checkpoint(model, cfg), str(tmp_path / "f.pth"))
    state = load_inference_file(half)["model"]
    ints = 0
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert state[k].dtype == torch.float16, k
            torch.testing.assert_close(state[k].float(), v, rtol=1e-3, atol=1e-4)
        else:  # e.g. BatchNorm's num_batches_tracked stays exact
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
            ints += 1
    assert ints > 0
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    # Loading halves into the float32 model converts them back.
    fresh = build_model(cfg.model)
    fresh.load_state_dict(state)
    assert all(p.dtype == torch.float32 for p in fresh.parameters())


def test_class_names_sources(tmp_path, model):
    from_ckpt = export_inference_file(training_checkpoint(model, class_names=NAMES),
                                      str(tmp_path / "a.pth"))
    assert load_inference_file(from_ckpt)["class_names"] == NAMES
    default = export_inference_file(training_checkpoint(model), str(tmp_path / "b.pth"))
    assert load_inference_file(default)["class_names"] == ["class_0", "class_1", "class_2"]
    with pytest.raises(CheckpointError, match=r"class_names has 2 names.*num_classes=3"):
        export_inference_file(training_checkpoint(model), str(tmp_path / "c.pth"),
                              class_names=["a", "b"])


def test_missing_class_names_never_build_a_dataset(tmp_path, model, caplog, monkeypatch):
    import dcn_det.data.build
    monkeypatch.setattr(dcn_det.data.build, "build_dataset",
                        lambda *a, **k: pytest.fail("reading a model file built a dataset"))
    ckpt = training_checkpoint(model)
    ckpt["config"]["data"]["test"] = {"type": "coco", "ann_file": str(tmp_path / "none.json")}
    path = export_inference_file(ckpt, str(tmp_path / "a.pth"))
    assert load_inference_file(path)["class_names"] == ["class_0", "class_1", "class_2"]
    assert "stores no class names; using class_0..class_2" in caplog.text
    ckpt_path = str(tmp_path / "ckpt.pth")
    torch.save(ckpt, ckpt_path)
    assert read_model_file(ckpt_path)[2] == ["class_0", "class_1", "class_2"]


def test_bad_checkpoints_are_named(tmp_path, model):
    ckpt_path = str(tmp_path / "ckpt.pth")
    torch.save({"model": model.state_dict()}, ckpt_path)
    with pytest.raises(CheckpointError, match=r"ckpt\.pth.*missing key 'config'"):
        export_inference_file(ckpt_path, str(tmp_path / "out.pth"))
    bad_cfg = training_checkpoint(model)
    bad_cfg["config"]["model"]["num_clases"] = 3
    with pytest.raises(CheckpointError, match=r"model\.num_clases.*num_classes"):
        export_inference_file(bad_cfg, str(tmp_path / "out.pth"))
    with pytest.raises(CheckpointError, match="'model' must be a non-empty state dict"):
        export_inference_file({"model": {}, "config": {}}, str(tmp_path / "out.pth"))
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_inference_file_error_names_path(tmp_path, model, damage):
    path = export_inference_file(training_checkpoint(model), str(tmp_path / "m.pth"))
    data = open(path, "rb").read()
    new = {"truncate": data[:len(data) // 2], "garbage": os.urandom(512), "empty": b""}[damage]
    with open(path, "wb") as f:
        f.write(new)
    with pytest.raises(CheckpointError, match=str(path)):
        load_inference_file(path)
    with pytest.raises(CheckpointError, match=str(path)):
        read_model_file(path)


def test_wrong_format_and_version(tmp_path, model):
    path = str(tmp_path / "m.pth")
    export_inference_file(training_checkpoint(model), path)
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "version": 2}, path)
    with pytest.raises(CheckpointError, match=r"m\.pth.*version 2.*reads version 1"):
        load_inference_file(path)
    torch.save({**obj, "format": "something.else"}, path)
    with pytest.raises(CheckpointError, match="not a dcn_det inference file"):
        load_inference_file(path)


class _Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running(tmp_path, model):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pth")
    torch.save({"format": FORMAT, "version": VERSION, "model": model.state_dict(),
                "config": tiny_config().to_dict(), "class_names": NAMES,
                "extra": _Payload(marker)}, path)
    for loader in (load_inference_file, read_model_file):
        with pytest.raises(CheckpointError, match=r"evil\.pth.*weights_only"):
            loader(path)
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        export_inference_file(path, str(tmp_path / "out.pth"))
    assert not os.path.exists(marker)
    # The payload is real: an unsafe load does run it (so the assertion above can fail).
    torch.load(path, weights_only=False)
    assert os.path.isdir(marker)


def test_read_model_file_accepts_training_checkpoints(tmp_path, model):
    path = str(tmp_path / "model_final.pth")
    torch.save(training_checkpoint(model), path)
    cfg, state, names = read_model_file(path)
    assert cfg == tiny_config() and names == ["class_0", "class_1", "class_2"]
    assert torch.equal(state["conv.weight"], model.conv.weight)


def _assert_same(got, want):
    assert len(got) == 3
    for g, name in zip(got, ("boxes", "scores", "labels")):
        assert g.dtype == want[name].dtype and g.shape == want[name].shape, name
        torch.testing.assert_close(g, want[name], rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # torch.export of a detector
def test_exported_program_matches_eager(tmp_path, model):
    torch.manual_seed(1)
    example = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    path = str(tmp_path / "m.pt2")
    program = export_program(model, example, path)
    loaded = torch.export.load(path).module()
    sizes = [(48, 64), (70, 37), (33, 96)]  # the example, then other (dynamic) sizes
    counts = set()
    for h, w in sizes:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        with torch.no_grad():
            want = model([img])[0]
            _assert_same(program.module()(img), want)
            _assert_same(loaded(img), want)
        counts.add(len(want["scores"]))
    assert len(counts) > 1 and max(counts) > 0  # detections vary with the input


@pytest.mark.slow  # torch.export of a detector
def test_static_program_rejects_other_sizes(model):
    example = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    program = export_program(model, example, None, dynamic_size=False).module()
    with torch.no_grad():
        _assert_same(program(example), model([example])[0])
    with pytest.raises(Exception, match="64|48"):
        program(torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8))


def test_export_program_input_errors(model):
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"uint8 \(3, H, W\).*torch.float32"):
        export_program(model, img.float(), None)
    with pytest.raises(ValueError, match=r"sides must be in \[32, 4096\]"):
        export_program(model, img[:, :8], None)
    with pytest.raises(ValueError, match="eval mode"):
        export_program(model.train(), img, None)


def test_onnx_without_onnx_says_so(tmp_path, model):
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    with pytest.raises(ValueError, match="opset must be >= 19"):
        export_onnx(model, img, str(tmp_path / "m.onnx"), opset=17)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="onnx"):
            export_onnx(model, img, str(tmp_path / "m.onnx"))
    else:
        pytest.skip("onnx is installed; test_onnx_export covers it")


@pytest.mark.slow  # ONNX export
def test_onnx_export(tmp_path, model):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    (tmp_path / "m.onnx").write_bytes(b"an older model")  # replaced, no temporary file left
    path = export_onnx(model, img, str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == ["m.onnx"]
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels"]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(path)
    got = sess.run(None, {"image": img.numpy()})
    want = model([img])[0]
    _assert_same([torch.from_numpy(g) for g in got], want)


@pytest.mark.slow  # ONNX export
def test_onnx_deform_conv_matches_onnxruntime(tmp_path):
    """Our deform_conv2d -> ONNX DeformConv gives the same numbers in onnxruntime."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from dcn_det.export import _onnx_translation_table
    from dcn_det.ops import DeformConv2d

    torch.manual_seed(0)
    conv = DeformConv2d(4, 6, 3, padding=1, offset_groups=2).eval()
    torch.nn.init.normal_(conv.conv_offset.weight, std=0.3)  # real, non-zero offsets
    x = torch.randn(1, 4, 9, 11)
    path = str(tmp_path / "dc.onnx")
    torch.onnx.export(conv, (x,), path, dynamo=True, opset_version=19,
                      custom_translation_table=_onnx_translation_table())
    sess = ort.InferenceSession(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), conv(x).detach(), rtol=1e-4, atol=1e-5)
