"""Native detection operators: ``torch.ops.dcn_det.*`` with Python wrappers and modules.

Importing this package loads ``dcn_det._C`` (which registers the operator schemas and the
CPU/CUDA kernels) and then the Python side of each op (fake kernels, autograd, autocast).
"""
import torch  # noqa: F401  (loads libtorch before our extension)

from dcn_det import _C  # noqa: F401,E402  (registers torch.ops.dcn_det)

# --- deform_conv2d (csrc/cpu/deform_conv2d.cpp) ---
from dcn_det.ops.deform_conv import (  # noqa: E402
    DeformConv2d, ModulatedDeformConv2d, deform_conv2d)
