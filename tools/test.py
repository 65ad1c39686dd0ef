#!/usr/bin/env python
"""``dcn-test`` from a source checkout: runs :mod:`dcn_det.tools.test`
(``--help`` for its usage)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.tools.test import main, run  # noqa: E402

__all__ = ["main", "run"]  # main(argv): for tests and scripts

if __name__ == "__main__":
    sys.exit(run())
