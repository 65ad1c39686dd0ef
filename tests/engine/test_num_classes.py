"""model.num_classes is checked against the training set before the first step."""
import os

import pytest

from dcn_det.config import load_config
from dcn_det.data.base import DatasetError
from dcn_det.engine.trainer import train
from dcn_det.tools import train as train_tool
from tests.reliability.datasets_on_disk import basic_coco, write_coco


def test_num_classes_mismatch_stops_before_the_first_step(tiny_config, tmp_path, monkeypatch,
                                                          capsys):
    import dcn_det.engine.trainer as trainer
    ann = write_coco(str(tmp_path / "data"), basic_coco())  # 3 categories
    out = str(tmp_path / "run")
    sets = [f"runtime.output_dir={out}", "data.train.type=coco",
            f"data.train.root={tmp_path / 'data'}", f"data.train.ann_file={ann}"]
    monkeypatch.setattr(trainer, "run_step", lambda *a, **k: pytest.fail("a step ran"))
    with pytest.raises(DatasetError, match=r"(?s)the training set .*ann\.json.* has 3 classes "
                                           r".*model\.num_classes is 2.*model\.num_classes=3"):
        train(load_config(tiny_config, sets))
    assert not os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))
    # the command: one line naming both numbers and the file, exit 2
    code = train_tool.run(["--config", tiny_config] + sum((["--set", s] for s in sets), []))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "ann.json" in err and "3 classes" in err and "model.num_classes is 2" in err
