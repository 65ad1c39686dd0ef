"""The ablation runner: variants files, planning, skipping, resuming and the aggregate."""
import json
import math
import os
import time

import pytest
import torch

from dcn_det.ablation import (aggregate, format_markdown, plan_runs, read_overrides_file,
                              run_all, write_report)
from dcn_det.ablation.runner import subprocess_launcher, write_spec
from dcn_det.ablation.run_one import final_metrics, is_finished
from dcn_det.config import ConfigError
from dcn_det.evaluation.metrics_file import append_metrics
from tests.engine.conftest import run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "ablation", "rfcn_short.yaml")

# 8 tiny synthetic images, ResNet-18 x0.125: a run trains in seconds.
TINY = """
_base_: {base}
model:
  num_classes: 2
  backbone: {{width_mult: 0.125, gn_groups: 4}}
  rpn: {{conv_channels: 32, pre_nms_topk_train: 200, post_nms_topk_train: 64,
         pre_nms_topk_test: 200, post_nms_topk_test: 50, batch_size_per_image: 64}}
  head: {{conv_channels: 64, batch_size_per_image: 32}}
data:
  train:
    synthetic: {{num_images: 8, image_size: [96, 128], num_classes: 2, min_objects: 1,
                 max_objects: 2, min_object_size: 16, max_object_fraction: 0.6}}
  test:
    synthetic: {{num_images: 4, image_size: [96, 128], num_classes: 2, min_objects: 1,
                 max_objects: 2, min_object_size: 16, max_object_fraction: 0.6}}
  min_size_train: [96]
  max_size_train: 160
  min_size_test: 96
  max_size_test: 160
  num_workers: 0
solver: {{base_lr: 0.01, max_iter: 40, steps: [30], warmup_iters: 5, checkpoint_period: 4,
          keep_last: 0}}
runtime: {{log_period: 10}}
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(base=BASE))
    return str(path)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


# ------------------------------------------------------------------ variants files

def test_variants_file_keeps_order_and_lists(tmp_path):
    path = _write(tmp_path / "v.yaml", "b: [model.num_classes=3]\na: []\nc:\n")
    assert read_overrides_file(path, "variant") == {
        "b": ["model.num_classes=3"], "a": [], "c": []}


@pytest.mark.parametrize("text, pattern", [
    ("[1, 2]", r"non-empty mapping of variant name"),
    ("", r"non-empty mapping"),
    ("a: model.num_classes=3", r"variant 'a' must be a list of KEY=VALUE"),
    ("a: [model.num_classes]", r"variant 'a' must be a list of KEY=VALUE"),
    ("'../x': []", r"variant name '\.\./x'"),
    ("a: [b", r"invalid YAML"),
])
def test_bad_variants_file_names_file_and_entry(tmp_path, text, pattern):
    path = _write(tmp_path / "v.yaml", text)
    with pytest.raises(ConfigError, match=pattern) as e:
        read_overrides_file(path, "variant")
    assert "v.yaml" in str(e.value)


def test_plan_names_the_bad_variant_before_anything_runs(tiny_config, tmp_path):
    variants = {"ok": [], "typo": ["model.backbone.deform_stage=[res5]"]}
    with pytest.raises(ConfigError, match=r"variant 'typo'.*deform_stage"):
        plan_runs(tiny_config, variants, [0, 1], str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"test set 'small'.*min_objekt"):
        plan_runs(tiny_config, {"ok": []}, [0], str(tmp_path / "out"),
                  tests={"small": ["data.test.synthetic.min_objekt=3"]})
    with pytest.raises(ConfigError, match="distinct"):
        plan_runs(tiny_config, {"ok": []}, [0, 0], str(tmp_path / "out"))


def test_plan_gives_one_run_per_variant_and_seed(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": [], "b": ["model.head.deformable=false"]}, [3, 5],
                     str(tmp_path / "out"), tests={"small": ["data.test.synthetic.seed=9"]})
    assert [(r.variant, r.seed) for r in runs] == [("a", 3), ("a", 5), ("b", 3), ("b", 5)]
    assert runs[3].run_dir == str(tmp_path / "out" / "runs" / "b" / "seed5")
    assert runs[3].overrides[0] == "model.head.deformable=false"
    assert "runtime.seed=5" in runs[3].overrides
    assert list(runs[0].tests) == ["test", "small"]
    assert runs[0].test_dir("small") == os.path.join(runs[0].run_dir, "test_small")


# ------------------------------------------------------------------ aggregation

def _fake_metrics(path, ap50, ap=10.0, apl=4.0):
    """metrics.json as training (run dir: a periodic line, then the final one at the tiny
    config's max_iter 40) or tools/test.py (test folders: iteration null) writes it."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    bbox = {"AP": ap, "AP50": ap50, "AP75": 1.0, "APs": 2.0, "APm": 3.0, "APl": apl}
    final = {"bbox": bbox, "bbox_per_class": {"disc": 1.0}}
    if os.path.basename(folder).startswith("test_"):
        append_metrics(folder, final, None, checkpoint="model_final.pth")
    else:
        append_metrics(folder, {"bbox": {**bbox, "AP50": -1.0}}, 10)  # periodic: never read
        append_metrics(folder, final, 40)


def test_aggregate_hand_made_metrics(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"base": [], "better": ["model.head.deformable=false"],
                                   "noisy": ["model.backbone.deform_stages=[]"]},
                     [0, 1, 2], str(tmp_path / "out"))
    values = {"base": [10.0, 12.0, 14.0], "better": [20.0, 21.0, 22.0],
              "noisy": [5.0, 15.0, 25.0]}
    for r in runs:
        _fake_metrics(os.path.join(r.run_dir, "metrics.json"), values[r.variant][r.seed])
    res = aggregate(runs)
    assert res["baseline"] == "base" and res["seeds"] == [0, 1, 2]
    assert res["metrics"] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    base = res["variants"]["base"]["summary"]["test"]["AP50"]
    assert base["mean"] == pytest.approx(12.0) and base["std"] == pytest.approx(2.0)
    better = res["variants"]["better"]["summary"]["test"]["AP50"]
    assert better["mean"] == pytest.approx(21.0) and better["std"] == pytest.approx(1.0)
    assert better["delta"] == pytest.approx(9.0) and better["exceeds_spread"]  # 9 > 1 + 2
    noisy = res["variants"]["noisy"]["summary"]["test"]["AP50"]
    assert noisy["std"] == pytest.approx(10.0) and noisy["delta"] == pytest.approx(3.0)
    assert not noisy["exceeds_spread"]  # 3 < 10 + 2
    ap = res["variants"]["better"]["summary"]["test"]["AP"]
    assert ap["std"] == 0.0 and ap["delta"] == 0.0 and not ap["exceeds_spread"]
    md = format_markdown(res)
    assert "| base (baseline) | 10.0 ± 0.0 | 12.0 ± 2.0 |" in md
    assert "| better | 10.0 ± 0.0 (+0.0) | 21.0 ± 1.0 (+9.0*) |" in md
    assert "15.0 ± 10.0 (+3.0) |" in md
    assert "`model.head.deformable=false`" in md and "runtime.seed" not in md


def test_metrics_without_objects_of_a_size_are_shown_as_missing(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": [], "b": []}, [0, 1], str(tmp_path / "out"))
    for r in runs:
        path = os.path.join(r.run_dir, "metrics.json")
        _fake_metrics(path, 10.0 + r.seed, apl=float("nan"))  # no large object in the split
    res = aggregate(runs)
    apl = res["variants"]["b"]["summary"]["test"]["APl"]
    assert apl["n"] == 0 and math.isnan(apl["mean"]) and not apl["exceeds_spread"]
    assert res["variants"]["b"]["summary"]["test"]["AP50"]["n"] == 2
    assert "nan" not in format_markdown(res) and "| 3.0 ± 0.0 (+0.0) | — |" in format_markdown(res)


def test_aggregate_reports_missing_seeds(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": [], "b": []}, [0, 1], str(tmp_path / "out"),
                     tests={"small": []})
    for r in runs:
        if (r.variant, r.seed) != ("b", 1):
            _fake_metrics(os.path.join(r.run_dir, "metrics.json"), 10.0 + r.seed)
        if r.variant == "a":
            _fake_metrics(os.path.join(r.test_dir("small"), "metrics.json"), 1.0)
    res = aggregate(runs)
    b = res["variants"]["b"]
    assert b["missing"] == ["seed 0 / small", "seed 1 / test", "seed 1 / small"]
    assert b["summary"]["test"]["AP50"]["n"] == 1 and math.isnan(b["summary"]["test"]["AP50"]["std"])
    assert b["summary"]["small"]["AP50"]["n"] == 0
    md = format_markdown(res)
    assert "missing results: seed 0 / small, seed 1 / test, seed 1 / small" in md
    assert "## Test set `small`" in md


def test_write_report_files(tiny_config, tmp_path):
    out = tmp_path / "out"
    runs = plan_runs(tiny_config, {"a": [], "b": []}, [0, 1], str(out))
    for r in runs:
        _fake_metrics(os.path.join(r.run_dir, "metrics.json"), 10.0 + r.seed)
    write_report(runs, str(out))
    data = json.loads((out / "results.json").read_text())
    assert data["variants"]["b"]["runs"]["1"]["test"]["AP50"] == 11.0
    assert (out / "results.md").read_text().startswith("# Ablation of `tiny.yaml`")
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_any_result_is_a_clear_error(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": []}, [0], str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"no run of this ablation has results yet.*runs"):
        write_report(runs, str(tmp_path / "out"))


# ------------------------------------------------------------------ running

class _Done:
    """A launcher handle for a run that already finished with ``code``."""

    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


def test_only_the_final_training_line_finishes_a_run(tiny_config, tmp_path):
    run = plan_runs(tiny_config, {"a": []}, [0], str(tmp_path / "out"))[0]
    append_metrics(run.run_dir, {"bbox": {"AP50": 5.0}}, 10)  # periodic (eval_period)
    assert final_metrics(run, "test") is None and not is_finished(run)
    assert aggregate([run])["variants"]["a"]["missing"] == ["seed 0 / test"]
    append_metrics(run.run_dir, {"bbox": {"AP50": 7.0}}, 40)  # solver.max_iter of TINY
    assert final_metrics(run, "test") == {"bbox": {"AP50": 7.0}} and is_finished(run)
    # a metrics.json of an older dcn_det (one document, written after training) is final too
    old = plan_runs(tiny_config, {"b": []}, [0], str(tmp_path / "old"))[0]
    os.makedirs(old.run_dir)
    _write(os.path.join(old.run_dir, "metrics.json"), json.dumps({"bbox": {"AP50": 3.0}}, indent=2))
    assert final_metrics(old, "test") == {"bbox": {"AP50": 3.0}}


def test_finished_runs_are_skipped(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": [], "b": []}, [0, 1], str(tmp_path / "out"))
    for r in runs[:3]:
        _fake_metrics(os.path.join(r.run_dir, "metrics.json"), 1.0)
    launched = []

    def launcher(spec, path, threads):
        launched.append((spec.variant, spec.seed, threads))
        assert json.load(open(path))["run_dir"] == spec.run_dir
        _fake_metrics(os.path.join(spec.run_dir, "metrics.json"), 2.0)
        return _Done(0)

    assert run_all(runs, nproc=2, threads=1, launcher=launcher, poll_seconds=0) == []
    assert launched == [("b", 1, 1)]
    assert run_all(runs, launcher=launcher, poll_seconds=0) == []
    assert launched == [("b", 1, 1)]  # now everything is finished


def test_failed_run_is_reported_and_others_go_on(tiny_config, tmp_path):
    runs = plan_runs(tiny_config, {"a": []}, [0, 1], str(tmp_path / "out"))

    def launcher(spec, path, threads):
        if spec.seed == 1:
            _fake_metrics(os.path.join(spec.run_dir, "metrics.json"), 2.0)
            return _Done(0)
        return _Done(3)

    assert run_all(runs, nproc=1, launcher=launcher, poll_seconds=0) == [runs[0].run_dir]


def test_run_directory_of_another_definition_is_refused(tiny_config, tmp_path):
    out = str(tmp_path / "out")
    write_spec(plan_runs(tiny_config, {"a": []}, [0], out)[0])
    changed = plan_runs(tiny_config, {"a": ["model.head.deformable=false"]}, [0], out)
    with pytest.raises(ConfigError, match=r"seed0 holds a run of another definition"):
        run_all(changed, launcher=lambda *a: pytest.fail("must not launch"))


def _final_weights(run_dir):
    from dcn_det.io.checkpoint import load_file
    return load_file(os.path.join(run_dir, "checkpoints", "model_final.pth"))["model"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tiny_config, tmp_path):
    # one thread everywhere: bitwise-equal weights need the same reduction order
    ref = plan_runs(tiny_config, {"a": []}, [0], str(tmp_path / "ref"))
    assert run_all(ref, threads=1, poll_seconds=0.2) == []
    runs = plan_runs(tiny_config, {"a": []}, [0], str(tmp_path / "crash"))
    run = runs[0]
    proc = subprocess_launcher(run, write_spec(run), 1)
    ckpts = os.path.join(run.run_dir, "checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and not (
            os.path.isdir(ckpts) and "model_0000011.pth" in os.listdir(ckpts)):
        time.sleep(0.05)
    proc.kill()  # a crash: no handler runs
    proc.wait()
    assert not os.path.exists(os.path.join(ckpts, "model_final.pth"))
    assert run_all(runs, threads=1, poll_seconds=0.2) == []
    log = open(os.path.join(run.run_dir, "stdout.log")).read()
    assert "resumed from" in log
    a, b = _final_weights(ref[0].run_dir), _final_weights(run.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    res = aggregate(runs)
    assert res["variants"]["a"]["summary"]["test"]["AP50"]["n"] == 1


@pytest.mark.slow
def test_ablate_tool_end_to_end(tiny_config, tmp_path):
    variants = _write(tmp_path / "v.yaml", "plain: [model.head.deformable=false]\n"
                                            "dpool: [model.head.deformable=true]\n")
    tests = _write(tmp_path / "t.yaml", "other: [data.test.synthetic.seed=5]\n")
    out = str(tmp_path / "abl")
    args = ["--config", tiny_config, "--variants", variants, "--tests", tests, "--seeds", "0",
            "1", "--output-dir", out, "--nproc", "2", "--threads", "1"]
    # The command runs here; each of its runs is a process of its own, as for a user.
    proc = run_tool("ablate", *args, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "## Test set `other`" in proc.stdout
    for name in ("results.json", "results.md", "results.png", "results_other.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    res = json.load(open(os.path.join(out, "results.json")))
    assert all(res["variants"][v]["summary"][t]["AP50"]["n"] == 2
               for v in ("plain", "dpool") for t in ("test", "other"))
    # a second call trains nothing
    again = run_tool("ablate", *args, check=False)
    assert again.returncode == 0 and again.stdout.count("skip ") == 4
    assert "start " not in again.stdout and "resume " not in again.stdout
    assert open(os.path.join(out, "ablate_log.txt")).read().count("skip plain seed 0") == 1
