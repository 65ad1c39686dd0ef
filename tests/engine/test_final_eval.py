"""train(final_eval=False): the run ends with its final checkpoint and no evaluation."""
import os

import pytest

from dcn_det.config import load_config
from dcn_det.engine.trainer import train
from dcn_det.io.checkpoint import load_file


@pytest.mark.slow  # trains the tiny model
def test_no_final_eval_writes_the_checkpoint_but_no_metrics(tiny_config, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    cfg = load_config(tiny_config, [f"runtime.output_dir={out}", "solver.max_iter=4",
                                    "solver.checkpoint_period=0", "solver.warmup_iters=2"])
    calls = []
    import dcn_det.engine.trainer as trainer
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: calls.append(a) or {"bbox": {}})
    assert train(cfg, resume="none", final_eval=False) == {}
    assert calls == [] and not os.path.exists(os.path.join(out, "metrics.json"))
    assert load_file(os.path.join(out, "checkpoints", "model_final.pth"))["iteration"] == 4
    # the same run with the evaluation does call it, so the test above can fail
    cfg2 = load_config(tiny_config, [f"runtime.output_dir={out}2", "solver.max_iter=4",
                                     "solver.checkpoint_period=0", "solver.warmup_iters=2"])
    train(cfg2, resume="none")
    assert len(calls) == 1 and os.path.exists(os.path.join(out + "2", "metrics.json"))
