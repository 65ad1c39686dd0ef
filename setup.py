"""Builds the ``dcn_det`` package and its native operator library ``dcn_det._C``.

The CPU sources in ``csrc/`` are always compiled. The CUDA sources in ``csrc/cuda`` are
compiled when torch is a CUDA build and a CUDA toolkit is found, or when ``FORCE_CUDA=1``;
``FORCE_CUDA=0`` builds the CPU kernels only. ``TORCH_CUDA_ARCH_LIST`` selects the GPU
architectures; without it and without a visible GPU, a default list that the nvcc version
compiles is used (``setup_helpers.py``, where these decisions live).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

import setup_helpers  # noqa: E402


def _want_cuda() -> bool:
    """True when the CUDA kernels should be compiled (see module docstring); with CUDA and no
    visible GPU, also sets a default ``TORCH_CUDA_ARCH_LIST`` when none is given."""
    try:
        cuda = setup_helpers.want_cuda(os.environ, torch.version.cuda, CUDA_HOME)
        if cuda:
            arches = setup_helpers.arch_list_for_build(
                os.environ, torch.cuda.device_count(), setup_helpers.nvcc_version(CUDA_HOME))
            if arches is not None:
                print(f"dcn_det: no GPU visible, building for TORCH_CUDA_ARCH_LIST={arches}")
                os.environ["TORCH_CUDA_ARCH_LIST"] = arches
    except ValueError as e:
        sys.exit(f"error: {e}")
    print("dcn_det: building the CUDA and CPU kernels" if cuda
          else "dcn_det: building the CPU kernels only")
    return cuda


def make_extension():
    """Returns the ``dcn_det._C`` extension with the sources for this machine."""
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fopenmp: at::parallel_for is a header template that only runs in parallel when the
    # including translation unit is compiled with OpenMP; torch's own libgomp is reused at
    # run time because it is already loaded under the same soname.
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20"]
    extra = {"cxx": cxx_flags}
    define_macros = []
    ext_cls = CppExtension
    if _want_cuda():
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        ext_cls = CUDAExtension
        define_macros.append(("WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "--use_fast_math", "-std=c++20", "--expt-relaxed-constexpr"]
    return ext_cls(
        name="dcn_det._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


setup(
    name="dcn_det",
    version="0.1.0",
    description="Deformable ConvNets (DCN) object detection: R-FCN and Faster R-CNN in PyTorch",
    packages=find_packages(include=["dcn_det", "dcn_det.*"]),
    python_requires=">=3.9",
    # torch is pinned by the Makefile (a local CPU wheel); a range here would let pip fetch
    # a multi-GB CUDA build, so any installed torch satisfies it.
    install_requires=[
        "torch",
        "numpy",
        "pyyaml",
        "pycocotools",
        "opencv-python",
        "tensorboard",
        "defusedxml",
        "tqdm",
    ],
    # onnx/onnxscript/onnxruntime: the ONNX export path is optional for users, tested in dev.
    extras_require={"dev": ["pytest", "ninja", "onnx", "onnxscript", "onnxruntime"]},
    ext_modules=[make_extension()],
    entry_points={"console_scripts": [f"{name} = {target}" for name, target
                                      in setup_helpers.CONSOLE_SCRIPTS.items()]},
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
