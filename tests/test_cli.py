"""What the command-line tools share (dcn_det/cli.py): repeatable --set, the config of a model
file as the default, devices the machine lacks as one-line errors."""
import argparse
import os
import subprocess
import sys

import pytest
import torch

from dcn_det.evaluation.metrics_file import read_metrics
from dcn_det.cli import add_config_args, add_set_arg, config_from_args, run_main
from dcn_det.config import ConfigError, load_config
from dcn_det.distributed import DeviceError, parse_device, select_device
from dcn_det.io.model_file import load_inference_file
from dcn_det.tools import export as export_tool
from dcn_det.tools import infer as infer_tool
from dcn_det.tools import test as test_tool
from dcn_det.tools import train as train_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "engine", "tiny.yaml")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _parser():
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return parser


# --- --set may be repeated ---------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--set", "a=1", "--set", "b=2"],
    ["--set", "a=1", "b=2"],
    ["--set", "a=1", "--set", "b=2"],
])
def test_set_collects_every_occurrence_in_order(argv):
    assert _parser().parse_args(["--config", "c.yaml"] + argv).set == ["a=1", "b=2"]
    assert _parser().parse_args(["--config", "c.yaml"]).set == []


def test_set_later_wins_on_the_same_key():
    args = _parser().parse_args(["--config", TINY, "--set", "solver.max_iter=5",
                                 "solver.base_lr=0.5", "--set", "solver.max_iter=7"])
    cfg = config_from_args(args)
    assert cfg.solver.max_iter == 7 and cfg.solver.base_lr == 0.5


def test_set_default_is_not_shared_between_parses():
    parser = argparse.ArgumentParser()
    add_set_arg(parser)
    assert parser.parse_args(["--set", "a=1"]).set == ["a=1"]
    assert parser.parse_args([]).set == []


def test_check_dataset_applies_every_set(tmp_path, capsys):
    from dcn_det.tools import check_dataset
    missing = tmp_path / "missing.json"
    code = check_dataset.main(["--config", TINY, "--split", "test", "--set", "data.test.type=coco",
                               "--set", f"data.test.ann_file={missing}",
                               f"data.test.root={tmp_path}"])
    assert code == 1
    assert "missing.json" in capsys.readouterr().err


# --- the config stored in a model file is the default ------------------------------------------

def test_config_from_args_uses_the_stored_config():
    stored = load_config(TINY)
    parser = argparse.ArgumentParser()
    add_config_args(parser, config_required=False)
    args = parser.parse_args(["--set", "data.test.synthetic.num_images=3",
                              "--output-dir", "somewhere"])
    cfg = config_from_args(args, stored=stored)
    assert cfg.data.test.synthetic.num_images == 3 and cfg.runtime.output_dir == "somewhere"
    assert cfg.model == stored.model
    assert config_from_args(parser.parse_args([]), stored=stored) == stored
    # --config replaces the stored one; --set then applies to it
    args = parser.parse_args(["--config", TINY, "--set", "solver.max_iter=3"])
    assert config_from_args(args, stored=None).solver.max_iter == 3
    with pytest.raises(ConfigError, match="--config is required"):
        config_from_args(parser.parse_args([]), stored=None)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A training checkpoint of a tiny random R-FCN whose stored test set is 2 small images."""
    from tests.test_export import TINY as SHRINK, real_tiny_model
    model, _ = real_tiny_model("rfcn")
    cfg = load_config(os.path.join(ROOT, "configs", "demo", "rfcn_dcn_synthetic.yaml"),
                      SHRINK + ["data.test.synthetic.num_images=2",
                                "data.test.synthetic.image_size=[64,80]",
                                "data.min_size_test=64", "data.max_size_test=80",
                                "runtime.output_dir=/nonexistent/training/run"])
    path = str(tmp_path_factory.mktemp("ckpt") / "model_final.pth")
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 5,
                "class_names": ["disc", "square", "triangle"]}, path)
    return path


def _no_dataset(monkeypatch):
    import dcn_det.data.build
    monkeypatch.setattr(dcn_det.data.build, "build_dataset",
                        lambda *a, **k: pytest.fail("reading a model file built a dataset"))


def test_test_tool_takes_the_checkpoint_config(tiny_checkpoint, monkeypatch):
    import dcn_det.evaluation.evaluate as ev
    _no_dataset(monkeypatch)
    calls = []
    monkeypatch.setattr(ev, "evaluate_checkpoint", lambda cfg, path, model_file=None:
                        calls.append((cfg, path, model_file)) or {})
    assert test_tool.main(["--checkpoint", tiny_checkpoint,
                           "--set", "data.test.synthetic.num_images=1"]) == 0
    cfg, path, model_file = calls[-1]
    assert path == tiny_checkpoint and model_file is not None  # the file is read once
    assert cfg.data.test.synthetic.num_images == 1              # --set on the stored config
    assert cfg.data.min_size_test == 64                         # the rest as stored
    assert cfg.runtime.output_dir == tiny_checkpoint[:-len(".pth")] + "_test"
    # --config replaces the stored config (and then the file is read by evaluate_checkpoint)
    assert test_tool.main(["--checkpoint", tiny_checkpoint, "--config", TINY,
                           "--output-dir", "x"]) == 0
    cfg, _, model_file = calls[-1]
    assert model_file is None and cfg.data.test.synthetic.image_size == (96, 128)


def test_test_tool_on_a_checkpoint_alone(tiny_checkpoint):
    assert test_tool.main(["--checkpoint", tiny_checkpoint]) == 0
    out = tiny_checkpoint[:-len(".pth")] + "_test"
    metrics = read_metrics(os.path.join(out, "metrics.json"))
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert os.path.isfile(os.path.join(out, "detections.json"))


def test_export_overrides_the_stored_config(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    _no_dataset(monkeypatch)
    out = str(tmp_path / "m.pth")
    assert export_tool.main(["--checkpoint", tiny_checkpoint, "--output", out,
                             "--set", "model.head.score_thresh=0.3",
                             "--set", "data.min_size_test=72"]) == 0
    info = load_inference_file(out)
    assert info["config"].model.head.score_thresh == 0.3
    assert info["config"].data.min_size_test == 72
    assert info["class_names"] == ["disc", "square", "triangle"]
    plain = str(tmp_path / "plain.pth")
    assert export_tool.main(["--checkpoint", tiny_checkpoint, "--output", plain]) == 0
    assert load_inference_file(plain)["config"].model.head.score_thresh != 0.3
    # a config whose model the weights do not fit is a one-line error naming the file
    code = export_tool.run(["--checkpoint", tiny_checkpoint, "--output", str(tmp_path / "x.pth"),
                            "--set", "model.backbone.width_mult=0.25"])
    err = capsys.readouterr().err
    assert code == 2 and "do not fit" in err and "model_final.pth" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "x.pth")


# --- devices this machine does not have --------------------------------------------------------

def test_parse_device():
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"--device 'gpu0' is not a device name"):
        parse_device("gpu0")
    with pytest.raises(DeviceError, match="--device 'cuda:x' is not a device name"):
        parse_device("cuda:x")


@no_cuda
def test_cuda_without_cuda_is_a_user_error(tmp_path, capsys):
    with pytest.raises(DeviceError, match=r"--device 'cuda': no CUDA device"):
        parse_device("cuda")
    with pytest.raises(DeviceError, match=r"runtime.device is 'cuda' but no CUDA device"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")
    code = infer_tool.run(["--model", str(tmp_path / "none.pth"), "--input", str(tmp_path),
                           "--output-dir", str(tmp_path / "o"), "--device", "cuda:1"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --device 'cuda:1': no CUDA device is available on this " \
                                "machine (use --device cpu)\n"
    code = train_tool.run(["--config", TINY, "--output-dir", str(tmp_path / "run"),
                           "--set", "runtime.device=cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: runtime.device is 'cuda'") and err.count("\n") == 1
    assert run_main(lambda: parse_device("cuda")) == 2


@no_cuda
@pytest.mark.slow  # a subprocess
def test_cuda_without_cuda_in_a_subprocess(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "infer.py"), "--model",
                        str(tmp_path / "none.pth"), "--input", str(tmp_path), "--output-dir",
                        str(tmp_path / "o"), "--device", "cuda"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --device 'cuda': no CUDA device is available on this machine (use --device cpu)"]


def test_ablate_set_applies_to_every_variant_before_its_own(tmp_path, monkeypatch):
    import dcn_det.ablation
    from dcn_det.tools import ablate
    variants = tmp_path / "v.yaml"
    variants.write_text("base: []\nshort: [solver.max_iter=2]\n")
    seen = {}

    def plan(config, variants, seeds, output_dir, tests):
        seen.update(variants)
        raise ConfigError("stop here")
    monkeypatch.setattr(dcn_det.ablation, "plan_runs", plan)
    with pytest.raises(ConfigError, match="stop here"):
        ablate.main(["--config", TINY, "--variants", str(variants), "--seeds", "0",
                     "--output-dir", str(tmp_path / "out"), "--set", "solver.max_iter=5",
                     "--set", "solver.base_lr=0.1"])
    assert seen == {"base": ["solver.max_iter=5", "solver.base_lr=0.1"],
                    "short": ["solver.max_iter=5", "solver.base_lr=0.1", "solver.max_iter=2"]}
