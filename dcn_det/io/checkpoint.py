"""Crash-safe, self-verifying checkpoints: atomic writes, a ``last_checkpoint`` pointer,
retention, verified safe loading.

Layout of ``<output_dir>/checkpoints/``::

    model_0000999.pth     one file per saved iteration (iteration = last finished one)
    model_final.pth       written when training ends
    last_checkpoint       text file: the newest complete checkpoint's name and a newline
    .tmp_*                a save in progress (left behind only by a killed save)

A checkpoint is a dict of tensors and plain containers written by ``torch.save`` and sealed
with the SHA-256 of its bytes (:mod:`dcn_det.io.checksum`), so a changed byte anywhere is found
before the file is used. It loads with ``torch.load(weights_only=True)`` only; nothing in it
can execute code. Files without the checksum (older dcn_det, other tools) still load, with a
warning that they cannot be verified.
"""
import io
import logging
import os
import re
from typing import Any, Dict, List, Optional

import torch

from dcn_det.io.atomic import TMP_PREFIX, save_torch, write_text
from dcn_det.io.checksum import ChecksumError, verify

logger = logging.getLogger(__name__)

POINTER = "last_checkpoint"
_NAME_RE = re.compile(r"^model_(\d{7}|final)\.pth$")
_OLD_POINTER_TMP = f".{POINTER}.tmp"  # the pointer's temporary name before io.atomic
_POINTER_MAX_BYTES = 256


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, not a checkpoint, or unsafe to load."""


def load_file(path: str, what: str = "checkpoint") -> Dict[str, Any]:
    """Loads a checkpoint or inference file, verified, with ``weights_only=True`` (never
    falls back to unsafe pickling).

    The whole file is read once; its SHA-256 trailer is checked and the same bytes are loaded.

    Args:
        path: the ``.pth`` file.
        what: what the file is, for the error messages ("checkpoint", "model file").

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: naming ``path`` when the file is missing, unreadable, corrupt (its
            checksum does not match), truncated, holds objects that ``weights_only`` refuses
            (e.g. a pickle that would run code) or is not a dict.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read {what} {path!r}: {e.strerror or e}") from e
    try:
        verified = verify(data)
    except ChecksumError as e:
        raise CheckpointError(f"{what} {path!r} is corrupt: {e}") from e
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            f"cannot load {what} {path!r} safely (weights_only=True): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not verified:
        logger.warning("%s has no checksum (written by an older dcn_det or another tool), so "
                       "damage to it cannot be detected", path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path!r} holds a {type(obj).__name__}, not a dict")
    return obj


def atomic_save(obj: Any, path: str, what: str = "checkpoint") -> str:
    """Writes ``obj`` to ``path`` sealed with its checksum, so that ``path`` is either the old
    file or the complete new one (:func:`dcn_det.io.atomic.save_torch`); returns ``path``."""
    return save_torch(path, obj, what=what)


class Checkpointer:
    """Saves and finds training checkpoints in ``<output_dir>/checkpoints``.

    Args:
        output_dir: the run's output directory; nothing is written outside it (a symlinked
            folder below it that leads elsewhere is refused).
        keep_last: how many periodic ``model_XXXXXXX.pth`` files to keep (``model_final.pth``
            is never pruned); 0 keeps all.
    """

    def __init__(self, output_dir: str, keep_last: int = 3):
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "checkpoints")
        self.keep_last = keep_last

    def path_for(self, name: str) -> str:
        """Absolute path of checkpoint ``name`` (e.g. ``model_0000999.pth``)."""
        return os.path.join(self.folder, name)

    def save(self, name: str, state: Dict[str, Any]) -> str:
        """Atomically writes ``state`` as ``name``, then moves the pointer, then prunes.

        The order matters: the pointer only ever names a complete file, and old files are
        deleted only after the new one is safe on disk.

        Raises:
            dcn_det.io.atomic.WriteError: the file could not be written (e.g. ``"cannot write
                checkpoint model_0000999.pth to DIR: No space left on device"``); no partial
                file is left and the pointer still names the previous checkpoint.
        """
        path = save_torch(self.path_for(name), state, root=self.output_dir, what="checkpoint")
        write_text(os.path.join(self.folder, POINTER), name + "\n", root=self.output_dir,
                   what="checkpoint pointer")
        self._prune()
        return path

    def remove_stale_temporaries(self) -> int:
        """Deletes the temporary files a killed save left behind, with a warning; returns how
        many. Call it only from the process that saves (rank 0), before it saves."""
        if not os.path.isdir(self.folder):
            return 0
        stale = sorted(n for n in os.listdir(self.folder)
                       if (n.startswith(TMP_PREFIX) or n == _OLD_POINTER_TMP)
                       and not os.path.isdir(self.path_for(n)))
        for name in stale:
            os.remove(self.path_for(name))
        if stale:
            logger.warning("removed %d stale temporary file(s) of an interrupted save from %s: "
                           "%s", len(stale), self.folder, ", ".join(stale))
        return len(stale)

    def _pointer_target(self, names: List[str]) -> Optional[str]:
        """The name in ``last_checkpoint`` when it is one of ``names``; warns about a pointer
        that is unreadable, not text, not a checkpoint name, or names a missing file."""
        ptr = os.path.join(self.folder, POINTER)
        if not os.path.lexists(ptr):
            return None
        try:
            with open(ptr, "rb") as f:
                raw = f.read(_POINTER_MAX_BYTES + 1)
        except OSError as e:
            logger.warning("ignoring the checkpoint pointer %s: cannot read it: %s", ptr,
                           e.strerror or e)
            return None
        try:
            target = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            target = None
        if target is None or len(raw) > _POINTER_MAX_BYTES or not _NAME_RE.match(target):
            logger.warning("ignoring the checkpoint pointer %s: it holds %r, not a checkpoint "
                           "name; using the newest checkpoint found instead", ptr, raw[:40])
            return None
        if target not in names:
            logger.warning("the checkpoint pointer %s names %s, which does not exist; using the "
                           "newest checkpoint found instead", ptr, target)
            return None
        return target

    def candidates(self) -> List[str]:
        """Checkpoint paths, newest first (``model_final`` first, then by iteration).

        The pointer's target leads when it exists; the rest follow so that a corrupt newest file
        can be skipped for the previous one.
        """
        if not os.path.isdir(self.folder):
            return []
        names = [n for n in os.listdir(self.folder) if _NAME_RE.match(n)]
        names.sort(key=lambda n: (n == "model_final.pth", n), reverse=True)
        target = self._pointer_target(names)
        if target is not None:
            names.remove(target)
            names.insert(0, target)
        return [self.path_for(n) for n in names]

    def load_latest(self) -> Optional[Dict[str, Any]]:
        """Returns the newest checkpoint that loads and verifies, warning about each damaged
        one skipped; None when the folder holds no checkpoint.

        Raises:
            CheckpointError: every checkpoint in the folder is damaged (the message lists each
                with its reason), so that a run never restarts from iteration 0 silently.
        """
        failures = []
        for path in self.candidates():
            try:
                ckpt = load_file(path)
            except CheckpointError as e:
                logger.warning("skipping unusable checkpoint: %s", e)
                failures.append(f"{os.path.basename(path)} ({e})")
                continue
            ckpt["_path"] = path
            return ckpt
        if failures:
            raise CheckpointError(
                f"no usable checkpoint in {self.folder}: all {len(failures)} are damaged: "
                + "; ".join(failures) + ". Move them away or pass --resume none to start over")
        return None

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        periodic = sorted(n for n in os.listdir(self.folder)
                          if _NAME_RE.match(n) and n != "model_final.pth")
        for name in periodic[:-self.keep_last]:
            os.remove(self.path_for(name))
