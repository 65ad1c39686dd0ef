"""The NDArray file reader: every header version, and errors that name the file."""
import struct

import numpy as np
import pytest

from dcn_det.weights import UnreadableWeightsError, WeightsError
from dcn_det.weights.mxnet_params import read_params
from tests.weights.writers import params_bytes, write_params

ARRAYS = {"arg:conv1_weight": np.arange(2 * 3 * 7 * 7, dtype=np.float32).reshape(2, 3, 7, 7),
          "aux:bn_conv1_moving_var": np.array([1.5, 2.5], dtype=np.float64),
          "arg:half": np.array([[0.5, -1.0]], dtype=np.float16)}


@pytest.mark.parametrize("version", ["v2", "v1", "legacy"])
def test_reads_every_header_version(tmp_path, version):
    write_params(tmp_path / "m.params", ARRAYS, version)
    out = read_params(str(tmp_path / "m.params"))
    assert list(out) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape
        np.testing.assert_array_equal(out[name], array)
        assert out[name].flags.writeable


def test_truncated_file_names_file_and_offset(tmp_path):
    data = params_bytes(ARRAYS)
    path = tmp_path / "cut.params"
    path.write_bytes(data[:200])
    with pytest.raises(UnreadableWeightsError, match=r"cut\.params.*truncated.*array 0"):
        read_params(str(path))
    path.write_bytes(data[:-3])
    with pytest.raises(UnreadableWeightsError, match=r"cut\.params.*truncated.*name 2"):
        read_params(str(path))
    path.write_bytes(data[:10])
    with pytest.raises(UnreadableWeightsError, match=r"cut\.params.*truncated"):
        read_params(str(path))


def test_wrong_magic_names_the_file(tmp_path):
    data = bytearray(params_bytes(ARRAYS))
    path = tmp_path / "wrong.params"
    path.write_bytes(struct.pack("<Q", 0x113) + bytes(data[8:]))
    with pytest.raises(WeightsError, match=r"wrong\.params.*not an MXNet NDArray file.*0x112"):
        read_params(str(path))
    data[24:28] = struct.pack("<I", 0xDEADBEEF)  # the first array's magic
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"wrong\.params.*array 0.*0xDEADBEEF"):
        read_params(str(path))


def test_sparse_arrays_and_missing_names_are_refused(tmp_path):
    data = bytearray(params_bytes(ARRAYS))
    data[28:32] = struct.pack("<i", 1)  # array 0: row_sparse storage
    path = tmp_path / "sparse.params"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"sparse\.params.*array 0.*storage type 1"):
        read_params(str(path))
    body = params_bytes({"a": np.zeros(2, np.float32)})
    path.write_bytes(body[:-(8 + 1 + 8)] + struct.pack("<Q", 0))  # zero names
    with pytest.raises(WeightsError, match=r"sparse\.params.*1 arrays but 0 names"):
        read_params(str(path))
