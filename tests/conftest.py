"""Shared pytest fixtures and options."""
import importlib

import pytest
import torch


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
def _seed():
    """Every test starts from the same RNG state, so failures reproduce."""
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: subprocess, multi-process, training or export tests (deselect with "
                   "-m 'not slow' for a fast inner loop)")
