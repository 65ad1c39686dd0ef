"""The restricted unpickler builds numpy arrays and refuses everything else."""
import os
import pickle

import numpy as np
import pytest

from dcn_det.weights import RefusedGlobalError, UnreadableWeightsError, WeightsError
from dcn_det.weights.restricted_pickle import load_restricted


class _Payload:
    """Pickles as a call of os.system, as a malicious weights file would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1_w": np.zeros(3)}, "x": _Payload(f"touch {marker}")}, f,
                    protocol=2)
    with pytest.raises(RefusedGlobalError) as info:
        load_restricted(str(path))
    message = str(info.value)
    assert "evil.pkl" in message
    assert "posix.system" in message or "os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_numpy_arrays_dicts_and_scalars_load(tmp_path, protocol):
    obj = {"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                     "b": np.float64(2.5), "c": np.array([1, 2], dtype=np.int64)},
           "__author__": "Caffe2", "matching_heuristics": True, "list": [1, "x", None]}
    path = tmp_path / "ok.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    out = load_restricted(str(path))
    np.testing.assert_array_equal(out["model"]["a"], obj["model"]["a"])
    assert out["model"]["b"] == 2.5 and out["__author__"] == "Caffe2"


def test_other_globals_and_values_are_refused(tmp_path):
    path = tmp_path / "set.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": {1, 2}}, f, protocol=2)  # a set needs builtins.set
    with pytest.raises(RefusedGlobalError, match=r"set\.pkl.*(builtins|__builtin__)\.set"):
        load_restricted(str(path))
    with open(path, "wb") as f:
        pickle.dump({"a": (1, 2)}, f, protocol=2)  # built by opcodes, but not accepted
    with pytest.raises(WeightsError, match=r"set\.pkl.*\['a'\] is a tuple"):
        load_restricted(str(path))
    with open(path, "wb") as f:
        pickle.dump({"a": np.array([object()], dtype=object)}, f, protocol=2)
    with pytest.raises(RefusedGlobalError, match=r"refusing to load .*set\.pkl"):
        load_restricted(str(path))


class _Encode:
    """Pickles as ``_codecs.encode`` with another codec."""

    def __reduce__(self):
        import codecs
        return codecs.encode, ("x", "rot13")


def test_codecs_encode_is_limited_to_latin1_bytes(tmp_path):
    path = tmp_path / "codec.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": _Encode()}, f, protocol=2)
    with pytest.raises(RefusedGlobalError, match=r"codec\.pkl.*'rot13'"):
        load_restricted(str(path))


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "cut.pkl"
    data = pickle.dumps({"w": np.zeros(100)}, protocol=2)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableWeightsError, match=r"cut\.pkl"):
        load_restricted(str(path))
