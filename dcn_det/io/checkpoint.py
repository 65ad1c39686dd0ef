"""Crash-safe checkpoints: atomic writes, a ``last_checkpoint`` pointer, retention, safe loading.

Layout of ``<output_dir>/checkpoints/``::

    model_0000999.pth     one file per saved iteration (iteration = last finished one)
    model_final.pth       written when training ends
    last_checkpoint       text file naming the newest complete checkpoint

A checkpoint is a dict of tensors and plain containers, so it loads with
``torch.load(weights_only=True)``; nothing in it can execute code.
"""
import logging
import os
import re
import tempfile
from typing import Any, Dict, List, Optional

import torch

logger = logging.getLogger(__name__)

POINTER = "last_checkpoint"
_NAME_RE = re.compile(r"^model_(\d{7}|final)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not a checkpoint, or unsafe to load."""


def load_file(path: str) -> Dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True`` (never falls back to unsafe pickling).

    Args:
        path: the ``.pth`` file.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: naming ``path`` when the file is missing, truncated, corrupt or holds
            objects that ``weights_only`` refuses (e.g. a pickle that would run code).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            f"cannot load checkpoint {path!r} safely (weights_only=True): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a dict")
    return obj


def atomic_save(obj: Dict[str, Any], path: str) -> None:
    """Writes ``obj`` to ``path`` so that ``path`` is either the old file or the complete new one.

    The data goes to a temporary file in the same folder, is flushed and fsync'ed, and is then
    renamed over ``path`` (rename is atomic on POSIX within one file system).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class Checkpointer:
    """Saves and finds training checkpoints in ``<output_dir>/checkpoints``.

    Args:
        output_dir: the run's output directory.
        keep_last: how many periodic ``model_XXXXXXX.pth`` files to keep (``model_final.pth``
            is never pruned); 0 keeps all.
    """

    def __init__(self, output_dir: str, keep_last: int = 3):
        self.folder = os.path.join(output_dir, "checkpoints")
        self.keep_last = keep_last

    def path_for(self, name: str) -> str:
        """Absolute path of checkpoint ``name`` (e.g. ``model_0000999.pth``)."""
        return os.path.join(self.folder, name)

    def save(self, name: str, state: Dict[str, Any]) -> str:
        """Atomically writes ``state`` as ``name``, then moves the pointer, then prunes.

        The order matters: the pointer only ever names a complete file, and old files are
        deleted only after the new one is safe on disk.
        """
        path = self.path_for(name)
        atomic_save(state, path)
        tmp_ptr = os.path.join(self.folder, f".{POINTER}.tmp")
        with open(tmp_ptr, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_ptr, os.path.join(self.folder, POINTER))
        self._prune()
        return path

    def candidates(self) -> List[str]:
        """Checkpoint paths, newest first (``model_final`` first, then by iteration).

        The pointer's target leads when it exists; the rest follow so that a corrupt newest file
        can be skipped for the previous one.
        """
        if not os.path.isdir(self.folder):
            return []
        names = [n for n in os.listdir(self.folder) if _NAME_RE.match(n)]
        names.sort(key=lambda n: (n == "model_final.pth", n), reverse=True)
        ptr = os.path.join(self.folder, POINTER)
        if os.path.isfile(ptr):
            with open(ptr) as f:
                target = f.read().strip()
            if target in names:
                names.remove(target)
                names.insert(0, target)
        return [self.path_for(n) for n in names]

    def load_latest(self) -> Optional[Dict[str, Any]]:
        """Returns the newest checkpoint that loads, warning about each corrupt one skipped."""
        for path in self.candidates():
            try:
                ckpt = load_file(path)
            except CheckpointError as e:
                logger.warning("skipping unusable checkpoint: %s", e)
                continue
            ckpt["_path"] = path
            return ckpt
        return None

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        periodic = sorted(n for n in os.listdir(self.folder)
                          if _NAME_RE.match(n) and n != "model_final.pth")
        for name in periodic[:-self.keep_last]:
            os.remove(self.path_for(name))
