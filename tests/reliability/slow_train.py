"""``tools/train.py`` with slow spots at known moments, so a test can send a signal into them.

    SLOW_SAVE=1 python tests/reliability/slow_train.py --config CFG ...
    SLOW_BUILD=1 python tests/reliability/slow_train.py --config CFG ...

SLOW_SAVE: every checkpoint save prints ``saving <name>`` and waits 2 s before writing; the
interpreter's exit prints ``shutting down`` and waits 2 s.
SLOW_BUILD: building the model prints ``building`` and waits 30 s first.
"""
import atexit
import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from dcn_det.engine import trainer  # noqa: E402
from dcn_det.io.checkpoint import Checkpointer  # noqa: E402

if os.environ.get("SLOW_SAVE"):
    _save = Checkpointer.save

    def _slow_save(self, name, state):
        print(f"saving {name}", flush=True)
        time.sleep(2.0)
        return _save(self, name, state)

    Checkpointer.save = _slow_save

    def _slow_exit():
        print("shutting down", flush=True)
        time.sleep(2.0)

    atexit.register(_slow_exit)

if os.environ.get("SLOW_BUILD"):
    _build = trainer.build_model

    def _slow_build(cfg, **kwargs):
        print("building", flush=True)
        time.sleep(30.0)
        return _build(cfg, **kwargs)

    trainer.build_model = _slow_build

sys.argv[0] = os.path.join(ROOT, "tools", "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")
