"""model.weights from dcn_det's own checkpoints and inference files: class-count changes."""
import logging

import pytest
import torch

from dcn_det.io import CheckpointError, atomic_save, export_inference_file, load_file
from dcn_det.weights import (CLASS_LAYERS, FillError, WeightsError, detect_detector_format,
                             load_detector_weights)
from tests.weights import writers as W
from tests.weights.detectors import detector, snapshot


def _save_checkpoint(path, cfg, model, names):
    atomic_save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "iteration": 3,
                 "rng": {}, "config": cfg.to_dict(), "class_names": names}, str(path))


def _is_class_layer(key):
    return key.startswith(CLASS_LAYERS)


@pytest.mark.parametrize("head", [("model.head.type=rfcn",),
                                  ("model.head.type=fast_rcnn", "model.head.pooler=deformable",
                                   "model.head.conv_channels=16", "model.head.fc_dim=32",
                                   "model.head.class_agnostic_bbox=false")])
def test_four_class_checkpoint_into_seven_class_model(tmp_path, caplog, head):
    cfg4, model4 = detector("model.num_classes=4", *head, seed=0)
    saved = snapshot(model4)
    for v in saved.values():  # distinct from any fresh init, so a copy is recognisable
        if v.is_floating_point():
            v.add_(0.5)
    model4.load_state_dict(saved)
    _save_checkpoint(tmp_path / "four.pth", cfg4, model4, ["a", "b", "c", "d"])

    _, model7 = detector("model.num_classes=7", *head, seed=1)
    fresh = snapshot(model7)
    with caplog.at_level(logging.INFO, logger="dcn_det.weights"):
        report = load_detector_weights(model7, str(tmp_path / "four.pth"),
                                       read_checkpoint=load_file)
    state = model7.state_dict()
    changed = sorted(k for k in state if state[k].shape != saved[k].shape)
    assert changed and all(_is_class_layer(k) for k in changed)
    assert sorted(report.reinitialised) == changed
    for key, value in state.items():
        if key in changed:
            assert torch.equal(value, fresh[key]), key  # the model's own fresh init
        else:
            assert torch.equal(value, saved[key]), key  # backbone, RPN, other head layers
    assert any(k.startswith("backbone.layer4.0.conv2.conv_offset") for k in report.loaded)
    assert report.missing == [] and report.unexpected == []
    assert report.filled == report.fillable - len(changed)
    assert report.format == "dcn_det" and report.file_num_classes == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "has 4 classes, the model 7" in text
    for layer in {k.rsplit(".", 1)[0] for k in changed}:
        assert layer in text


def test_inference_file_fills_every_tensor(tmp_path):
    cfg, model = detector(seed=0)
    ref = W.detector_reference(model, seed=4)
    model.load_state_dict(ref, strict=False)
    _save_checkpoint(tmp_path / "ckpt.pth", cfg, model, ["x", "y"])
    export_inference_file(str(tmp_path / "ckpt.pth"), str(tmp_path / "model.pth"), fp16=True)
    assert detect_detector_format(str(tmp_path / "model.pth")) == "dcn_det"
    _, target = detector(seed=1)
    report = load_detector_weights(target, str(tmp_path / "model.pth"),
                                   pixel_mean=cfg.model.pixel_mean, pixel_std=cfg.model.pixel_std)
    assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
    assert report.filled == report.fillable
    for key, value in target.state_dict().items():
        if key in ref:  # stored as float16: equal after the same rounding
            torch.testing.assert_close(value, ref[key].half().float(), rtol=0, atol=0,
                                       msg=key)


def test_other_shape_mismatch_is_an_error_and_nothing_loads(tmp_path):
    cfg, model = detector("model.rpn.conv_channels=48")
    _save_checkpoint(tmp_path / "c.pth", cfg, model, ["x", "y"])
    _, target = detector(seed=1)
    before = snapshot(target)
    with pytest.raises(WeightsError, match=r"c\.pth.*rpn\.head\.conv\.weight: file has "
                                           r"\(48, 32, 3, 3\), model needs \(32, 32, 3, 3\)"):
        load_detector_weights(target, str(tmp_path / "c.pth"))
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # a class-layer mismatch at the same class count is an error too (another box mode)
    cfg, model = detector("model.head.class_agnostic_bbox=false")
    _save_checkpoint(tmp_path / "s.pth", cfg, model, ["x", "y"])
    with pytest.raises(WeightsError, match=r"rfcn_bbox\.weight: file has .*class count is 2, "
                                           r"the model's 2"):
        load_detector_weights(target, str(tmp_path / "s.pth"))


def test_fill_check_and_refused_files(tmp_path):
    cfg, model = detector()
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    atomic_save({"model": heads, "config": cfg.to_dict()}, str(tmp_path / "heads.pth"))
    with pytest.raises(FillError, match=r"heads\.pth.*'dcn_det' filled \d+ of \d+ of the "
                                        r"detector's tensors.*model\.weights_min_fill"):
        load_detector_weights(detector(seed=1)[1], str(tmp_path / "heads.pth"))
    report = load_detector_weights(detector(seed=1)[1], str(tmp_path / "heads.pth"),
                                   min_fill=0.05)
    assert report.missing and all(k.startswith("backbone.") for k in report.missing)

    backbone = {k[len("backbone."):]: v for k, v in model.state_dict().items()
                if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"r18\.pth.*not a whole detector.*"
                                           r"model\.backbone\.pretrained"):
        load_detector_weights(model, str(tmp_path / "r18.pth"))
    W.write_pickle(tmp_path / "model_final.pkl", {"model": {}})
    with pytest.raises(WeightsError, match=r"detectron2.*model\.backbone\.pretrained"):
        load_detector_weights(model, str(tmp_path / "model_final.pkl"))
    with pytest.raises(WeightsError, match=r"weights_format must be"):
        load_detector_weights(model, str(tmp_path / "heads.pth"), format="torchvision")


def test_damaged_checkpoint_is_refused_by_the_verifying_reader(tmp_path):
    cfg, model = detector()
    _save_checkpoint(tmp_path / "c.pth", cfg, model, ["x", "y"])
    data = bytearray((tmp_path / "c.pth").read_bytes())
    needle = model.state_dict()["rpn.head.conv.weight"].numpy().tobytes()[:16]
    data[data.find(needle) + 3] ^= 0x10
    (tmp_path / "c.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.pth.*is corrupt"):
        load_detector_weights(detector(seed=1)[1], str(tmp_path / "c.pth"),
                              read_checkpoint=load_file)
