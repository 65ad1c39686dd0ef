"""setup_helpers: CPU-only switch, CUDA auto-detection and the default GPU architectures."""
import pytest

import setup_helpers as H

CUDA_TORCH = "13.0"   # torch.version.cuda of a CUDA build
TOOLKIT = "/usr/local/cuda"


@pytest.mark.parametrize("env, torch_cuda, cuda_home, expected", [
    ({}, CUDA_TORCH, TOOLKIT, True),                 # auto: CUDA torch and a toolkit
    ({}, None, TOOLKIT, False),                      # CPU torch
    ({}, CUDA_TORCH, None, False),                   # no toolkit
    ({"FORCE_CUDA": "0"}, CUDA_TORCH, TOOLKIT, False),
    ({"FORCE_CUDA": "false"}, CUDA_TORCH, TOOLKIT, False),
    ({"DCN_DET_CPU_ONLY": "1"}, CUDA_TORCH, TOOLKIT, False),
    ({"DCN_DET_CPU_ONLY": "0"}, CUDA_TORCH, TOOLKIT, True),
    ({"FORCE_CUDA": "1"}, None, None, True),         # forced (cross-compiling)
    ({"FORCE_CUDA": ""}, CUDA_TORCH, TOOLKIT, True),  # empty = unset
    ({"FORCE_CUDA": "0", "DCN_DET_CPU_ONLY": "1"}, CUDA_TORCH, TOOLKIT, False),
])
def test_want_cuda(env, torch_cuda, cuda_home, expected):
    assert H.want_cuda(env, torch_cuda, cuda_home) is expected


def test_want_cuda_refuses_contradictions_and_unknown_values():
    with pytest.raises(ValueError, match="FORCE_CUDA=1 and DCN_DET_CPU_ONLY=1"):
        H.want_cuda({"FORCE_CUDA": "1", "DCN_DET_CPU_ONLY": "1"}, CUDA_TORCH, TOOLKIT)
    with pytest.raises(ValueError, match=r"FORCE_CUDA='maybe'"):
        H.want_cuda({"FORCE_CUDA": "maybe"}, CUDA_TORCH, TOOLKIT)


def test_parse_nvcc_version():
    text = ("nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, "
            "V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0")
    assert H.parse_nvcc_version(text) == (13, 0)
    assert H.parse_nvcc_version("Cuda compilation tools, release 11.8, V11.8.89") == (11, 8)
    assert H.parse_nvcc_version("command not found") is None


@pytest.mark.parametrize("nvcc, expected", [
    ((13, 0), "7.5;8.0;8.6;8.9;9.0+PTX"),        # CUDA 13 dropped Volta
    ((12, 4), "7.0;7.5;8.0;8.6;8.9;9.0+PTX"),
    ((11, 8), "7.0;7.5;8.0;8.6;8.9;9.0+PTX"),
    ((11, 1), "7.0;7.5;8.0;8.6+PTX"),            # no Ada/Hopper before 11.8
    ((11, 0), "7.0;7.5;8.0+PTX"),
    ((10, 2), "7.0;7.5+PTX"),
    (None, "7.0;7.5;8.0;8.6;8.9;9.0+PTX"),       # unknown version: keep all
])
def test_default_arch_list_follows_the_nvcc_version(nvcc, expected):
    assert H.default_arch_list(nvcc) == expected


def test_default_arch_list_fails_when_nothing_is_left():
    with pytest.raises(ValueError, match="nvcc 8.0 compiles none"):
        H.default_arch_list((8, 0))


def test_arch_list_for_build():
    # no GPU, nothing given: the default list for this nvcc
    assert H.arch_list_for_build({}, 0, (13, 0)) == "7.5;8.0;8.6;8.9;9.0+PTX"
    # a list given, or a GPU visible: torch decides (None = leave the environment alone)
    assert H.arch_list_for_build({"TORCH_CUDA_ARCH_LIST": "9.0"}, 0, (13, 0)) is None
    assert H.arch_list_for_build({}, 1, (13, 0)) is None
    assert H.arch_list_for_build({"TORCH_CUDA_ARCH_LIST": "native"}, 2, (13, 0)) is None
    with pytest.raises(ValueError, match="native but no GPU is visible"):
        H.arch_list_for_build({"TORCH_CUDA_ARCH_LIST": "native"}, 0, (13, 0))


def test_default_arch_list_is_accepted_by_torch(monkeypatch):
    # the list resolves to nvcc flags in torch's own parser (which fails with an IndexError
    # when no list is set and no GPU is visible)
    cpp_extension = pytest.importorskip("torch.utils.cpp_extension")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", H.default_arch_list((12, 4)))
    flags = cpp_extension._get_cuda_arch_flags()
    assert "-gencode=arch=compute_70,code=sm_70" in flags
    assert "-gencode=arch=compute_90,code=compute_90" in flags
