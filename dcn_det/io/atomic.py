"""Files replaced atomically: the one way dcn_det writes a file.

Every writer here puts the data in a fresh temporary file beside the target
(``tempfile.mkstemp``: an unpredictable name created with ``O_EXCL``, so nothing can be planted
there in advance), flushes and fsyncs it, and renames it over the target with ``os.replace``.
A reader, or a crash, therefore sees the old file or the complete new one, never a part.

Links: ``os.replace`` replaces a symlink at the target path with the new file; it never writes
through it (a warning says so). With ``root`` given, a folder between ``root`` and the target
that is a symlink leading outside ``root`` is refused with :class:`WriteError` naming it.

Failures: an ``OSError`` while writing (disk full, permissions, a directory at the target)
becomes one :class:`WriteError` naming the file, the folder and the reason, and the temporary
file is removed.
"""
import contextlib
import errno
import io
import json
import logging
import os
import tempfile
from typing import Any, Iterable, Iterator, Optional

import torch

from dcn_det.io.checksum import Buffer, seal

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp_"


class WriteError(OSError):
    """A file could not be written or would have been written outside its root.

    ``errno`` is the underlying error's number when there is one (e.g. ``errno.ENOSPC``).
    """


def _umask() -> int:
    # mkstemp creates files 0600; written files get the permissions open() would give them.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _check_folders(path: str, root: Optional[str]) -> None:
    """Refuses a symlinked folder between ``root`` and ``path`` that resolves outside ``root``."""
    if root is None:
        return
    root_abs = os.path.abspath(root)
    root_real = os.path.realpath(root_abs)
    folder = os.path.dirname(os.path.abspath(path))
    rel = os.path.relpath(folder, root_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise WriteError(f"refusing to write {path!r}: it is not inside {root!r}")
    current = root_abs
    for part in [] if rel == os.curdir else rel.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            real = os.path.realpath(current)
            if os.path.commonpath([real, root_real]) != root_real:
                raise WriteError(f"refusing to write {path!r}: {current!r} is a symlink to "
                                 f"{real!r}, outside the output directory {root!r} (to write "
                                 "elsewhere, choose the output directory itself there)")


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    # The error that got us here matters more than a failed cleanup.
    try:
        os.remove(path)
    except OSError:
        pass


def _write_all(fd: int, chunks: Iterable[Buffer]) -> None:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while len(view):
            view = view[os.write(fd, view):]


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(e: OSError, what: str, name: str, folder: str) -> "WriteError":
    """``e`` as the one-line :class:`WriteError` naming the file and folder, with the errno of
    ``e`` (EIO when it has none)."""
    reason = e.strerror or str(e) or type(e).__name__
    err = WriteError(f"cannot write {what} {name} to {folder}: {reason}")
    err.errno = e.errno if e.errno is not None else errno.EIO
    return err


@contextlib.contextmanager
def _replacing(path: str, root: Optional[str], what: str, suffix: str = "") -> Iterator[str]:
    """The steps every writer shares (module docstring): yields a fresh temporary path beside
    ``path``; after the block, gives it the usual permissions, fsyncs it, renames it over
    ``path`` and fsyncs the folder. An ``OSError`` becomes a :class:`WriteError`; whatever
    the block raises, the temporary file is removed."""
    _check_folders(path, root)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", suffix=suffix, dir=folder)
        os.close(fd)
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        _fsync_file(tmp)
        if os.path.islink(path):
            logger.warning("replacing the symlink %s (to %s) with a regular file", path,
                           os.path.realpath(path))
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except WriteError:
        raise
    except OSError as e:
        raise _write_error(e, what, name, folder) from e
    finally:
        if tmp is not None:
            _remove_quietly(tmp)


def write_chunks(path: str, chunks: Iterable[Buffer], *, root: Optional[str] = None,
                 what: str = "file") -> str:
    """Writes the concatenation of ``chunks`` to ``path`` atomically (folders are created).

    Args:
        path: the file to write or replace.
        chunks: byte buffers written in order.
        root: the output directory ``path`` must stay in (see the module docstring); None
            checks only the target itself.
        what: what the file is, for the error message ("checkpoint", "config", ...).

    Returns:
        ``path``.

    Raises:
        WriteError: ``"cannot write <what> <name> to <folder>: <reason>"``, or a refused link.
    """
    with _replacing(path, root, what) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            _write_all(fd, chunks)
        finally:
            os.close(fd)
    return path


@contextlib.contextmanager
def temp_path_for(path: str, *, root: Optional[str] = None,
                  what: str = "file") -> Iterator[str]:
    """For writers that need a file name (OpenCV's ``VideoWriter``): yields a fresh temporary
    path beside ``path`` with the same extension; after the block it replaces ``path`` as
    :func:`write_chunks` does. If the block raises, the temporary file is removed and nothing
    replaces ``path``.

    Raises:
        WriteError: as :func:`write_chunks` (an ``OSError`` in the block included).
    """
    with _replacing(path, root, what, suffix=os.path.splitext(path)[1]) as tmp:
        yield tmp


def write_bytes(path: str, data: Buffer, *, root: Optional[str] = None,
                what: str = "file") -> str:
    """Writes ``data`` to ``path`` atomically; see :func:`write_chunks`."""
    return write_chunks(path, [data], root=root, what=what)


def write_text(path: str, text: str, *, root: Optional[str] = None, what: str = "file") -> str:
    """Writes ``text`` as UTF-8 to ``path`` atomically; see :func:`write_chunks`."""
    return write_chunks(path, [text.encode("utf-8")], root=root, what=what)


def write_json(path: str, obj: Any, *, root: Optional[str] = None, what: str = "file") -> str:
    """Writes ``obj`` as indented JSON atomically (NaN stays NaN, as Python's json writes it);
    see :func:`write_chunks`."""
    return write_text(path, json.dumps(obj, indent=2), root=root, what=what)


def save_torch(path: str, obj: Any, *, root: Optional[str] = None,
               what: str = "checkpoint") -> str:
    """``torch.save(obj)`` sealed with its SHA-256 (:mod:`dcn_det.io.checksum`), written
    atomically; see :func:`write_chunks`.

    The serialised bytes are held in memory once, so that the digest covers exactly what is
    written.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_chunks(path, seal(buf.getbuffer()), root=root, what=what)
