"""MetricLogger: the console line reports window medians, TensorBoard gets the same values."""
import logging
import math

import pytest

from dcn_det.engine.logging import MetricLogger


class _Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars[(tag, step)] = value


def test_log_reports_window_medians(caplog):
    writer = _Writer()
    ml = MetricLogger(writer, max_iter=100, start_iter=0, window=3)
    for i, (a, b) in enumerate([(9.0, 0.0), (1.0, 1.0), (2.0, 5.0), (3.0, 2.0)]):
        ml.update({"loss_a": a, "loss_b": b}, data_time=0.01, iter_time=0.1 * (i + 1))
    # The window holds the last 3 iterations: loss_a 1, 2, 3; loss_b 1, 5, 2; totals 2, 7, 5.
    assert ml.median("loss_a") == 2.0 and ml.median("loss_b") == 2.0
    assert ml.median("total_loss") == 5.0
    assert ml.median("iter_time") == pytest.approx(0.3)
    root = logging.getLogger("dcn_det")
    propagate = root.propagate  # setup_logging (other tests) turns it off; caplog needs it
    with caplog.at_level(logging.INFO, logger="dcn_det"):
        root.propagate = True
        try:
            ml.log(3, lr=0.01)
        finally:
            root.propagate = propagate
    line = caplog.records[-1].getMessage()
    assert line.startswith("iter 4/100  total_loss: 5.0000  loss_a: 2.0000  loss_b: 2.0000")
    assert "lr: 0.01" in line and "eta:" in line
    assert writer.scalars[("train/loss_a", 4)] == 2.0
    assert writer.scalars[("train/total_loss", 4)] == 5.0


def test_median_before_any_update_is_nan():
    assert math.isnan(MetricLogger(None, 10, 0).median("loss_a"))
