"""model.weights in training: loaded when a run starts, never when it resumes (a resumed run
continues its own checkpoint, as in detectron2); the config fields."""
import os

import pytest
import torch

import dcn_det.engine.trainer as trainer
from dcn_det.config import ConfigError, load_config
from dcn_det.io import atomic_save
from dcn_det.io.checkpoint import load_file
from dcn_det.modeling import build_model
from tests.weights import writers as W

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "engine", "tiny.yaml")


@pytest.mark.slow  # two in-process trainings of one iteration (about 7 s)
def test_resume_takes_precedence_over_model_weights(tmp_path, monkeypatch):
    source_cfg = load_config(TINY)
    model = build_model(source_cfg.model)
    model.load_state_dict(W.detector_reference(model, seed=1), strict=False)
    atomic_save({"model": model.state_dict(), "config": source_cfg.to_dict(),
                 "class_names": ["a", "b"]}, str(tmp_path / "init.pth"))
    reports = []
    real = trainer.load_detector_weights
    monkeypatch.setattr(trainer, "load_detector_weights",
                        lambda *a, **k: reports.append(real(*a, **k)) or reports[-1])
    out = str(tmp_path / "run")
    common = [f"runtime.output_dir={out}", f"model.weights={tmp_path / 'init.pth'}",
              "solver.checkpoint_period=0", "solver.warmup_iters=1", "runtime.log_period=0"]
    trainer.train(load_config(TINY, common + ["solver.max_iter=1"]), resume="auto",
                  final_eval=False)
    assert len(reports) == 1 and reports[0].filled == reports[0].fillable  # a fresh run
    trainer.train(load_config(TINY, common + ["solver.max_iter=2"]), resume="auto",
                  final_eval=False)
    assert len(reports) == 1  # resumed from model_final.pth: the weights were not loaded
    with open(os.path.join(out, "log.txt")) as f:  # training logs to its own file
        log = f.read()
    assert "not loaded: resuming from" in log and "model_final.pth at iteration 1" in log


def test_weights_config_fields():
    cfg = load_config(TINY, ["model.weights=x.params", "model.weights_format=mxnet",
                             "model.weights_min_fill=0.8"])
    assert (cfg.model.weights, cfg.model.weights_format, cfg.model.weights_min_fill) == \
        ("x.params", "mxnet", 0.8)
    assert load_config(TINY).model.weights == ""
    with pytest.raises(ConfigError, match="weights_format"):
        load_config(TINY, ["model.weights_format=detectron2"])
    with pytest.raises(ConfigError, match="weights_min_fill"):
        load_config(TINY, ["model.weights_min_fill=2"])


@pytest.mark.slow  # two in-process trainings of one iteration
def test_backbone_pretrained_file_is_read_only_by_a_fresh_run(tmp_path):
    """A run resumes, and its models load, after the backbone's pretrained file is gone:
    their weights all come from the checkpoint."""
    from dcn_det.io.model_file import build_inference_model, export_inference_file, \
        read_model_file

    backbone = build_model(load_config(TINY).model).backbone
    pretrained = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), pretrained)
    out = str(tmp_path / "run")
    common = [f"runtime.output_dir={out}", f"model.backbone.pretrained={pretrained}",
              "solver.checkpoint_period=0", "solver.warmup_iters=1", "runtime.log_period=0"]
    trainer.train(load_config(TINY, common + ["solver.max_iter=1"]), resume="auto",
                  final_eval=False)
    os.remove(pretrained)
    with pytest.raises(FileNotFoundError, match="backbone.pth"):  # a fresh run needs it
        build_model(load_config(TINY, common).model)
    trainer.train(load_config(TINY, common + ["solver.max_iter=2"]), resume="auto",
                  final_eval=False)
    final = os.path.join(out, "checkpoints", "model_final.pth")
    assert load_file(final)["iteration"] == 2
    deploy = export_inference_file(final, str(tmp_path / "deploy.pth"))
    for path in (final, deploy):
        cfg, state, _ = read_model_file(path)
        assert cfg.model.backbone.pretrained == str(pretrained)
        model = build_inference_model(cfg, state)
        assert not model.training
