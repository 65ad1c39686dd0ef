"""The shared kernel headers (csrc/common) compile on their own for the host, and the math ones
for the device wherever nvcc exists: the CPU kernels use them, and the CUDA kernels must be able
to. The argument checks (op_checks.h) are host code on ATen types."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")
HEADERS = sorted(f for f in os.listdir(os.path.join(CSRC, "common")) if f.endswith(".h"))
ATEN_HEADERS = {"op_checks.h"}  # need torch's include paths

# Instantiates every helper for float and double in a kernel.
_DEVICE_USE = r"""
#include "common/bilinear.h"
#include "common/psroi_geometry.h"
using namespace dcn_det;
template <typename T>
__global__ void use_all(const T* roi, T* out) {
  int32_t idx[4]; bool valid[4]; T ly, lx, w[4], wy[4], wx[4]; bool fy, fx;
  bilinear::zero_padded(T(0.5), T(-1), 5, 7, idx, valid, ly, lx);
  bilinear::corner_weights(ly, lx, w);
  bilinear::corner_weight_grads(ly, lx, wy, wx);
  bilinear::clamped_open(T(0.5), T(0.2), 5, 7, idx, ly, lx, fy, fx);
  bilinear::PsroiSample<T> s;
  bilinear::psroi_sample(T(1), T(2), 5, 7, s);
  int64_t i64[4];
  bilinear::roi_align_sample(T(1), T(2), 5, 7, i64, w);
  psroi::RoiBox<T> b = psroi::roi_box(roi, T(0.0625), 7, 4);
  T h, ww;
  psroi::bin_start(b, T(0.1), T(0.2), 1, 2, &h, &ww);
  out[0] = h + ww + w[0] + wy[1] + wx[2] + s.ly + psroi::group_index(3, 7, 7) + ceil_div(7, 2);
}
template __global__ void use_all<float>(const float*, float*);
template __global__ void use_all<double>(const double*, double*);
"""


def _nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = os.path.join(home, "bin", "nvcc")
    return candidate if os.path.exists(candidate) else shutil.which("nvcc")


# Parsing ATen's headers takes seconds: those run with the slow tests (the extension's build
# compiles them anyway).
@pytest.mark.parametrize("header", [pytest.param(h, marks=[pytest.mark.slow] if h in ATEN_HEADERS
                                                 else []) for h in HEADERS])
def test_header_compiles_alone_on_the_host(header, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "one.cpp"
    src.write_text(f'#include "common/{header}"\n')
    includes = ["-I", CSRC]
    if header in ATEN_HEADERS:
        from torch.utils.cpp_extension import include_paths
        includes += [arg for path in include_paths() for arg in ("-I", path)]
    done = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", *includes, str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_headers_compile_for_the_device(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDA toolkit not installed)")
    src = tmp_path / "use_all.cu"
    src.write_text(_DEVICE_USE)
    done = subprocess.run([nvcc, "-std=c++17", "-I", CSRC, "-c", str(src), "-o",
                           str(tmp_path / "use_all.o")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
