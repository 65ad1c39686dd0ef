"""Timing helpers shared by the op benchmarks."""
import statistics
import time

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fns, device: str, repeats: int, warmup: int = 2) -> list:
    """Median wall times in milliseconds of each function in ``fns``.

    The functions are run interleaved (one call of each per round) so that a change in the
    machine's load during the measurement affects all of them alike; ``warmup`` untimed rounds
    come first.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            sync(device)
            ts.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(ts) for ts in times]


def fwd_bwd(forward, leaves):
    """Returns a closure running forward and backward with a fixed upstream gradient."""
    def run():
        for t in leaves:
            t.grad = None
        out = forward()
        out.backward(torch.ones_like(out))
    return run
