"""Process-group helpers: torchrun initialisation, device choice, rank queries, cross-rank
reductions and object gathering. Used by training and evaluation alike."""
import ctypes
import datetime
import logging
import os
import signal
import sys
from typing import Any, Dict, List

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# (pid, parent pid) as early as this process can read them: a torchrun worker imports this
# module at start, so its parent is still the launcher here (see die_with_parent).
_STARTED_AS = (os.getpid(), os.getppid())
_PR_SET_PDEATHSIG = 1  # linux/prctl.h



def is_dist() -> bool:
    """True when a process group is initialised (torchrun with more than zero peers)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True in a worker that torchrun (or another launcher setting ``LOCAL_RANK``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Has Linux send ``signum`` to this process when its parent process dies.

    A torchrun worker whose launcher is killed with SIGKILL would otherwise keep running (and
    holding its GPU) as an orphan. SIGTERM takes the same path as a ``kill``: the training loop
    writes a checkpoint at the iteration boundary and exits; elsewhere the process ends.
    If the parent died before the request took effect, the signal is sent at once.

    Returns:
        True when armed; False on platforms without ``prctl(PR_SET_PDEATHSIG)`` (with a
        warning when the call itself fails).
    """
    if not sys.platform.startswith("linux"):
        return False
    pid, parent = _STARTED_AS if _STARTED_AS[0] == os.getpid() else (os.getpid(), os.getppid())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(signum)),
                        ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError) as e:
        logger.warning("cannot ask to be stopped with the launcher (prctl unavailable: %s); "
                       "if the launcher is killed, kill this process (pid %d) too", e, pid)
        return False
    if rc != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s; if the launcher is killed, kill "
                       "this process (pid %d) too", os.strerror(ctypes.get_errno()), pid)
        return False
    if os.getppid() != parent:
        os.kill(pid, signum)
    return True


def init_from_env(device: torch.device) -> None:
    """Joins the process group that torchrun describes in the environment, if any.

    NCCL on CUDA, gloo on CPU. Without ``WORLD_SIZE`` (a plain ``python tools/train.py``) or
    with ``WORLD_SIZE=1`` no group is joined. A torchrun worker is first tied to its launcher
    (:func:`die_with_parent`), so killing the launcher stops it.
    """
    if launched_by_torchrun():
        die_with_parent()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_dist():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop together)."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def reduce_mean(values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """The mean over ranks of each scalar tensor, as floats (one all-reduce for all of them).

    A non-finite value on any rank makes that key's mean non-finite on every rank.
    """
    if not values:
        return {}
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if is_dist():
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked / get_world_size()
    return {k: float(v) for k, v in zip(values, stacked.tolist())}


def barrier() -> None:
    if is_dist():
        dist.barrier()


def gather_objects(obj: Any) -> List[Any]:
    """Returns every rank's ``obj`` (in rank order) on all ranks; ``[obj]`` when not distributed.

    Uses ``all_gather_object`` (pickles through the default process group), which every rank
    must call, so call it from all ranks even if only rank 0 uses the result.
    """
    if get_world_size() <= 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


class DeviceError(ValueError):
    """A device this machine does not have, or a device name torch does not know: a user error
    (the command-line tools print it as one line and exit 2)."""


def select_device(name: str) -> torch.device:
    """``runtime.device``: ``"auto"`` -> CUDA when available (this rank's GPU under torchrun),
    else CPU.

    Raises:
        DeviceError: ``"cuda"`` on a machine without a CUDA device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("runtime.device is 'cuda' but no CUDA device is available "
                              "(set runtime.device=cpu or auto, e.g. --set runtime.device=cpu)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def parse_device(name: str, what: str = "--device") -> torch.device:
    """A device named on the command line (``"cpu"``, ``"cuda"``, ``"cuda:1"``), checked
    against this machine.

    Args:
        name: the device string.
        what: how the user gave it, for the message (e.g. ``"--device"``).

    Raises:
        DeviceError: an unknown device name, CUDA without a CUDA device, or a GPU index that
            does not exist.
    """
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"{what} {name!r} is not a device name (e.g. cpu, cuda, cuda:1): "
                          f"{str(e).splitlines()[0]}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"{what} {name!r}: no CUDA device is available on this machine "
                              "(use --device cpu)")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{what} {name!r}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    return device
