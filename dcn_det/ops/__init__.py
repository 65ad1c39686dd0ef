"""Native detection operators: ``torch.ops.dcn_det.*`` with Python wrappers and modules.

Importing this package loads ``dcn_det._C`` (which registers the operator schemas and the
CPU/CUDA kernels) and then the Python side of each op (fake kernels, autograd, autocast).
"""
import torch  # noqa: F401  (loads libtorch before our extension)

from dcn_det import _C  # noqa: F401,E402  (registers torch.ops.dcn_det)

# deform_psroi_pool (DESIGN 4.2)
from dcn_det.ops.deform_psroi_pool import DeformPSRoIPool, deform_psroi_pool  # noqa: E402,F401

# RoIAlign and NMS (torchvision semantics).
from dcn_det.ops.nms import batched_nms, nms  # noqa: E402
from dcn_det.ops.roi_align import RoIAlign, roi_align  # noqa: E402

# deform_conv2d v1/v2 (DESIGN 4.1)
from dcn_det.ops.deform_conv import (  # noqa: E402
    DeformConv2d, ModulatedDeformConv2d, deform_conv2d)
from dcn_det.ops.affine_offsets import (  # noqa: E402,F401
    OFFSET_MODES, affine_offset_basis, expand_affine_offsets)

# deform_max_pool2d (DESIGN 4.4)
from dcn_det.ops.deform_max_pool import DeformMaxPool2d, deform_max_pool2d  # noqa: E402,F401
