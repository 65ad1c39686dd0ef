"""Reading MXNet's NDArray list files (``*.params``) without mxnet.

Layout (all little-endian), as ``mx.nd.save`` writes it::

    uint64 0x112 (list magic)   uint64 reserved
    uint64 N                    N arrays, each:
        uint32 magic
          0xF993FAC9 (V2): int32 storage type (0 = dense; sparse is refused), shape
          0xF993FAC8 (V1): shape
          anything else (legacy): the magic is ndim, then ndim uint32 dims
        shape (V1/V2) = uint32 ndim, ndim int64 dims; ndim 0 = an empty array, nothing follows
        int32 dev_type, int32 dev_id (the context saved with it; ignored)
        int32 type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64)
        prod(shape) * itemsize bytes of C-order data
    uint64 K (0 or N)           K names, each: uint64 length, UTF-8 bytes

Parameter files of the Module API name the arrays ``arg:<name>`` (learned) and
``aux:<name>`` (BatchNorm statistics).
"""
import os
import struct
from typing import Dict

import numpy as np

from dcn_det.weights.source import UnreadableWeightsError, WeightsError

LIST_MAGIC = 0x112
V2_MAGIC = 0xF993FAC9
V1_MAGIC = 0xF993FAC8
_DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}
_MAX_NDIM = 32


class _Reader:
    """Bounds-checked little-endian reads from the file's bytes."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise UnreadableWeightsError(
                f"MXNet params file {self.path!r} is truncated: {what} needs {size} bytes at "
                f"offset {self.pos}, the file has {len(self.data)}")
        out = memoryview(self.data)[self.pos:self.pos + size]
        self.pos += size
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _read_shape(r: _Reader, magic: int, what: str):
    if magic in (V1_MAGIC, V2_MAGIC):
        (ndim,) = r.unpack("i", f"{what}: ndim")
        if not 0 <= ndim <= _MAX_NDIM:
            raise WeightsError(f"MXNet params file {r.path!r}: {what} has ndim {ndim}")
        return r.unpack(f"{ndim}q", f"{what}: shape")
    if magic > _MAX_NDIM:
        raise WeightsError(f"MXNet params file {r.path!r}: {what} starts with 0x{magic:08X}, "
                           f"neither an NDArray magic (0x{V2_MAGIC:08X}, 0x{V1_MAGIC:08X}) nor "
                           f"a legacy ndim")
    return r.unpack(f"{magic}I", f"{what}: legacy shape")


def _read_array(r: _Reader, index: int):
    what = f"array {index}"
    (magic,) = r.unpack("I", f"{what}: magic")
    if magic == V2_MAGIC:
        (stype,) = r.unpack("i", f"{what}: storage type")
        if stype != 0:
            raise WeightsError(f"MXNet params file {r.path!r}: {what} has storage type {stype} "
                               f"(sparse); only dense arrays are weights")
    shape = _read_shape(r, magic, what)
    if len(shape) == 0:
        return None
    if any(d < 0 for d in shape):
        raise WeightsError(f"MXNet params file {r.path!r}: {what} has shape {shape}")
    r.unpack("ii", f"{what}: context")
    (flag,) = r.unpack("i", f"{what}: type flag")
    if flag not in _DTYPES:
        raise WeightsError(f"MXNet params file {r.path!r}: {what} has type flag {flag}, not one "
                           f"of {sorted(_DTYPES)}")
    dtype = np.dtype(_DTYPES[flag])
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    raw = r.take(count * dtype.itemsize, f"{what}: data of shape {tuple(shape)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_params(path: str) -> Dict[str, np.ndarray]:
    """Reads an MXNet ``.params`` / ``mx.nd.save`` file.

    Args:
        path: the file.

    Returns:
        name -> array (native byte order, the file's dtype), in file order; empty arrays
        (ndim 0) are left out.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: a wrong magic, sparse arrays, unknown type flags, no or mismatched names
            (the message names the file and the array).
        UnreadableWeightsError: the file ends early (names the offset and what was read).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    with open(path, "rb") as f:
        r = _Reader(f.read(), path)
    if len(r.data) < 16:
        raise UnreadableWeightsError(f"MXNet params file {path!r} is truncated: "
                                     f"{len(r.data)} bytes, the header alone has 16")
    header, _reserved = r.unpack("QQ", "header")
    if header != LIST_MAGIC:
        raise WeightsError(f"{path!r} is not an MXNet NDArray file: it starts with "
                           f"0x{header:X}, not the list magic 0x{LIST_MAGIC:X}")
    (count,) = r.unpack("Q", "array count")
    if count > len(r.data):
        raise WeightsError(f"MXNet params file {path!r}: array count {count} exceeds the file")
    arrays = [_read_array(r, i) for i in range(count)]
    (num_names,) = r.unpack("Q", "name count")
    if num_names != count:
        raise WeightsError(f"MXNet params file {path!r} has {count} arrays but {num_names} "
                           f"names; parameter files name every array")
    out: Dict[str, np.ndarray] = {}
    for i in range(num_names):
        (length,) = r.unpack("Q", f"name {i}: length")
        name = bytes(r.take(length, f"name {i}")).decode("utf-8", errors="replace")
        if name in out:
            raise WeightsError(f"MXNet params file {path!r}: the name {name!r} appears twice")
        if arrays[i] is not None:
            out[name] = arrays[i]
    if r.pos != len(r.data):
        raise WeightsError(f"MXNet params file {path!r}: {len(r.data) - r.pos} bytes follow the "
                           f"last name")
    return out
