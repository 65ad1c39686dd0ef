"""Shared pytest fixtures and options."""
import importlib
import os

import pytest
import torch

# One intra-op thread in the test process (DCN_DET_TEST_THREADS=N for more). On the shared
# 2-core machine a 2-thread pool stalls at every parallel region whenever its second thread has
# lost its core to another process: tests/ops took 104 s with 2 threads and 17 s with 1 at load
# average ~5. The kernels' multi-threaded paths are still run, by tests/ops/test_threads.py,
# which sets 2 threads for itself. (The tools the tests start run with OMP_NUM_THREADS=1 too.)
torch.set_num_threads(int(os.environ.get("DCN_DET_TEST_THREADS", "1")))


def _torchvision_ops():
    """Returns ``torchvision.ops`` when it imports cleanly, else None (CPU machines)."""
    try:
        return importlib.import_module("torchvision.ops")
    except Exception:  # noqa: BLE001 - a broken CUDA-only build raises many kinds of errors
        return None


@pytest.fixture(scope="session")
def tv_ops():
    """``torchvision.ops`` as an optional reference; skips the test where it is unusable."""
    ops = _torchvision_ops()
    if ops is None:
        pytest.skip("torchvision is not importable here (optional reference)")
    return ops


@pytest.fixture(autouse=True)
def _restore_dcn_det_logger():
    """Puts the ``dcn_det`` logger back after each test: code that trains or evaluates in-process
    calls ``setup_logging``, which turns propagation off and would hide later tests' records
    from ``caplog``."""
    import logging
    log = logging.getLogger("dcn_det")
    state = (list(log.handlers), log.level, log.propagate)
    yield
    for h in list(log.handlers):
        if h not in state[0]:
            log.removeHandler(h)
            h.close()
    log.handlers[:] = state[0]
    log.setLevel(state[1])
    log.propagate = state[2]


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so failures reproduce."""
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: subprocess, multi-process, training or export tests (deselect with "
                   "-m 'not slow' for a fast inner loop)")
