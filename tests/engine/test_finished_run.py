"""Rerunning train() in the folder of a finished run: nothing is trained or evaluated again,
one line says so; only a missing final evaluation is done; --resume none starts over."""
import os

from dcn_det.evaluation.metrics_file import read_metrics
from dcn_det.config import load_config
from dcn_det.engine.trainer import train


def _log(out):
    return open(os.path.join(out, "log.txt"), encoding="utf-8").read()


def test_rerun_of_a_finished_run(tiny_config, tmp_path, monkeypatch):
    import dcn_det.engine.trainer as trainer
    out = str(tmp_path / "run")
    cfg = load_config(tiny_config, [f"runtime.output_dir={out}", "solver.max_iter=2",
                                    "solver.checkpoint_period=0", "solver.warmup_iters=1"])
    evaluations = []
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: evaluations.append(a) or
                        {"bbox": {"AP": 12.5}})
    assert train(cfg) == {"bbox": {"AP": 12.5}}
    final = os.path.join(out, "checkpoints", "model_final.pth")
    stamps = {n: os.path.getmtime(os.path.join(out, n))
              for n in ("config.yaml", "metrics.json", "checkpoints/model_final.pth")}

    # finished: the stored metrics come back, nothing is written, one line explains
    assert train(cfg) == {"bbox": {"AP": 12.5}}
    assert len(evaluations) == 1
    assert stamps == {n: os.path.getmtime(os.path.join(out, n)) for n in stamps}
    lines = [ln for ln in _log(out).splitlines() if "finished run" in ln]
    assert len(lines) == 1
    assert (f"{out} holds a finished run (iteration 2 of solver.max_iter=2): nothing to do. "
            f"The final model is {final}. To train again, pass --resume none") in lines[0]
    assert "another --output-dir" in lines[0]

    # stopped during the final evaluation: evaluates only
    os.remove(os.path.join(out, "metrics.json"))
    assert train(cfg) == {"bbox": {"AP": 12.5}}
    assert len(evaluations) == 2
    assert read_metrics(os.path.join(out, "metrics.json")) == {"bbox": {"AP": 12.5}}
    assert "but its final evaluation did not: evaluating only" in _log(out)
    assert os.path.getmtime(final) == stamps["checkpoints/model_final.pth"]

    # --resume none trains again in the same folder
    train(cfg, resume="none")
    assert len(evaluations) == 3
    assert os.path.getmtime(final) >= stamps["checkpoints/model_final.pth"]
    assert "iter 2/2" in _log(out).split("holds a finished run")[-1]


def test_finished_without_evaluation_is_finished_too(tiny_config, tmp_path, monkeypatch):
    import dcn_det.engine.trainer as trainer
    out = str(tmp_path / "run")
    cfg = load_config(tiny_config, [f"runtime.output_dir={out}", "solver.max_iter=2",
                                    "solver.checkpoint_period=0", "solver.warmup_iters=1"])
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: 1 / 0)  # never called
    assert train(cfg, final_eval=False) == {}
    assert train(cfg, final_eval=False) == {}
    assert "holds a finished run" in _log(out)
