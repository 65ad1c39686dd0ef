"""A pickle reader that can build numpy arrays and nothing else.

``pickle.load`` runs any callable a file names (``os.system`` included), so a downloaded
``.pkl`` is read by ``RestrictedUnpickler``: its ``find_class`` hands out only what numpy needs
to rebuild arrays (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, and ``_frombuffer`` for
protocol 5) and refuses every other global, naming the file and the global. One more is
needed by Python 3 pickles of protocols 0-2, which have no bytes opcode and store an array's
raw bytes as ``_codecs.encode(text, "latin1")``: it is handed out as a function that does only
that. After loading, the object is walked and must consist of dicts, lists, strings, numbers,
booleans, None and numeric numpy arrays only.
"""
import importlib
import io
import os
import pickle
from typing import Any

import numpy as np

from dcn_det.weights.source import UnreadableWeightsError, WeightsError

# (module, name) pairs a pickled numpy array may reference. numpy 2 writes ``numpy._core``;
# numpy 1 (and every Detectron file) wrote ``numpy.core``: both resolve to the same objects.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy", "ndarray"): (None, "ndarray"),
    ("numpy", "dtype"): (None, "dtype"),
    ("_codecs", "encode"): ("codecs", "latin1"),
}
_MAX_DEPTH = 32


def _numpy_core(module: str):
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{module}")


class RefusedGlobalError(WeightsError):
    """The pickle names a global outside the numpy allow-list."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` limited to what pickled bytes use: a str to latin-1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise RefusedGlobalError(f"_codecs.encode is allowed only as (str, 'latin1'), got "
                                 f"({type(text).__name__}, {encoding!r}, {errors!r})")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` allows only numpy's array rebuilders.

    Args:
        file: a binary file object.
        path: the file's name, for messages.
    """

    def __init__(self, file, path: str):
        # latin1 reads the byte strings of Python 2 pickles (every Detectron file) unchanged.
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise RefusedGlobalError(
                f"refusing to load {self.path!r}: the pickle references the global "
                f"{module}.{name}, which is not needed for numpy arrays (allowed: "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})")
        where, attr = target
        if where == "codecs":
            return _latin1_encode
        return getattr(np if where is None else _numpy_core(where), attr)

    def persistent_load(self, pid):
        raise RefusedGlobalError(f"refusing to load {self.path!r}: the pickle uses persistent "
                                 f"ids ({pid!r}), which weights files never need")


def _check_plain(obj: Any, path: str, where: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise WeightsError(f"{path!r}: nesting deeper than {_MAX_DEPTH} at {where}")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise WeightsError(f"{path!r}: a dict key at {where} is a "
                                   f"{type(key).__name__}, not a string")
            _check_plain(value, path, f"{where}[{key!r}]", depth + 1)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_plain(value, path, f"{where}[{i}]", depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise WeightsError(f"{path!r}: the array at {where} has dtype {obj.dtype}, "
                               f"not a numeric one")
    elif not isinstance(obj, (str, bytes, int, float, bool, np.generic, type(None))):
        raise WeightsError(f"{path!r}: the value at {where} is a {type(obj).__name__}; only "
                           f"dicts, lists, strings, numbers and numpy arrays are accepted")


def load_restricted(path: str) -> Any:
    """Reads a pickle of dicts, lists, strings, numbers and numpy arrays.

    Raises:
        FileNotFoundError: no such file.
        RefusedGlobalError: the pickle references any other global (nothing it names is run).
        UnreadableWeightsError: not a pickle, or truncated.
        WeightsError: the loaded object holds another kind of value.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), path).load()
    except RefusedGlobalError as e:
        if path in str(e):
            raise
        raise RefusedGlobalError(f"refusing to load {path!r}: {e}") from e
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - every unpickling failure means "unreadable"
        raise UnreadableWeightsError(
            f"could not read pickle {path!r}: truncated or not a pickle "
            f"({type(e).__name__}: {e})") from e
    _check_plain(obj, path, "top level")
    return obj
