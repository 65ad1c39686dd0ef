"""``tools/train.py`` with one loss made NaN: how the tests reach a non-finite loss without a
test hook in the production loop.

    NAN_AT_ITER=7 python tests/engine/nan_train.py --config CFG ...   (or under torchrun)

The detector's classification loss becomes NaN at the NAN_AT_ITER-th training forward
(0-based) of the last rank only, so a distributed run shows that every rank stops.
"""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from dcn_det.modeling.detector import TwoStageDetector  # noqa: E402

_forward = TwoStageDetector.forward
_calls = [0]


def _forward_with_nan(self, images, targets=None, orig_sizes=None):
    out = _forward(self, images, targets, orig_sizes)
    if self.training:
        last_rank = int(os.environ.get("RANK", "0")) == int(os.environ.get("WORLD_SIZE", "1")) - 1
        if last_rank and _calls[0] == int(os.environ["NAN_AT_ITER"]):
            out = {**out, "loss_cls": out["loss_cls"] * float("nan")}
        _calls[0] += 1
    return out


TwoStageDetector.forward = _forward_with_nan
sys.argv[0] = os.path.join(ROOT, "tools", "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
