"""Config matrices in the fast loop: a config's VOC twin (the same structure with other classes
and anchors) runs with the slow tests, so ``-m "not slow"`` still builds every kind of model
once and a full run builds every config."""
import os
from typing import Callable, List, Optional

import pytest


def voc_twins_slow(configs: List[str], ids: Optional[Callable[[str], str]] = None) -> list:
    """``configs`` as ``parametrize`` values, those with ``voc`` in their file name marked slow."""
    return [pytest.param(c, id=ids(c) if ids else c,
                         marks=[pytest.mark.slow] if "voc" in os.path.basename(c) else [])
            for c in configs]
