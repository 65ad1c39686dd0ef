"""The shared argument checks of the native kernels (csrc/common/op_checks.h), called through
``torch.ops`` without the Python wrappers: one dtype for all of an op's floating tensors, the
dtypes the CPU kernels compute in, and messages that name the argument. (Shape messages: each
op's own test file.)"""
import pytest
import torch

import dcn_det.ops  # noqa: F401  registers torch.ops.dcn_det

OPS = torch.ops.dcn_det
ROIS = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])


def _conv(input, weight, offset, mask=None, bias=None):
    return OPS.deform_conv2d(input, weight, offset, mask, bias, 1, 1, 1, 1, 1, 1, 1, 1)


CASES = {
    "conv weight dtype": (lambda: _conv(torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3).double(),
                                        torch.zeros(1, 18, 6, 6)),
                          "weight has dtype Double but input has dtype Float"),
    "conv offset dtype": (lambda: _conv(torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3),
                                        torch.zeros(1, 18, 6, 6).double()),
                          "offset has dtype Double but input has dtype Float"),
    "conv mask dtype": (lambda: _conv(torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3),
                                      torch.zeros(1, 18, 6, 6), torch.ones(1, 9, 6, 6).double()),
                        "mask has dtype Double but input has dtype Float"),
    "conv bias dtype": (lambda: _conv(torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3),
                                      torch.zeros(1, 18, 6, 6), None, torch.zeros(6).double()),
                        "bias has dtype Double but input has dtype Float"),
    "conv half on the CPU": (lambda: _conv(torch.randn(1, 4, 6, 6).half(),
                                           torch.randn(6, 4, 3, 3).half(),
                                           torch.zeros(1, 18, 6, 6).half()),
                             "deform_conv2d: the CPU kernel takes float32 and float64 input, "
                             "got Half"),
    "psroi rois dtype": (lambda: OPS.deform_psroi_pool(torch.randn(1, 9, 5, 5), ROIS.double(),
                                                       None, 1.0, 1, 3, 3, 3, 2, 0.1),
                         "deform_psroi_pool: rois has dtype Double but input has dtype Float"),
    "psroi offset dtype": (lambda: OPS.deform_psroi_pool(torch.randn(1, 9, 5, 5), ROIS,
                                                         torch.zeros(1, 2, 3, 3).double(), 1.0,
                                                         1, 3, 3, 3, 2, 0.1),
                           "deform_psroi_pool: offset has dtype Double but input has dtype Float"),
    "psroi bfloat16 on the CPU": (lambda: OPS.deform_psroi_pool(
        torch.randn(1, 9, 5, 5).bfloat16(), ROIS.bfloat16(), None, 1.0, 1, 3, 3, 3, 2, 0.1),
        "the CPU kernel takes float32 and float64 input, got BFloat16"),
    "roi_align rois dtype": (lambda: OPS.roi_align(torch.randn(1, 3, 5, 5), ROIS.double(), 1.0,
                                                   2, 2, -1, False),
                             "roi_align: rois has dtype Double but input has dtype Float"),
    "roi_align half on the CPU": (lambda: OPS.roi_align(torch.randn(1, 3, 5, 5).half(),
                                                        ROIS.half(), 1.0, 2, 2, -1, False),
                                  "roi_align: the CPU kernel takes float32 and float64 input"),
    "roi_align backward rois dtype": (lambda: OPS._roi_align_backward(
        torch.randn(1, 3, 2, 2), ROIS.double(), 1.0, 2, 2, 1, 3, 5, 5, -1, False),
        "roi_align: rois has dtype Double but grad has dtype Float"),
    "batched_nms idxs": (lambda: OPS._batched_nms(torch.zeros(2, 4), torch.zeros(2),
                                                  torch.zeros(2), 0.5),
                         "_batched_nms: idxs must be an integer tensor, got Float"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_native_check_names_the_argument(name):
    call, message = CASES[name]
    with pytest.raises(RuntimeError) as info:
        call()
    assert message in str(info.value), str(info.value)


def test_checks_pass_for_consistent_arguments():
    # the same calls with one dtype run (guards the cases above against failing for another reason)
    out = _conv(torch.randn(1, 4, 6, 6), torch.randn(6, 4, 3, 3), torch.zeros(1, 18, 6, 6),
                torch.ones(1, 9, 6, 6), torch.zeros(6))
    assert out.shape == (1, 6, 6, 6)
    out, _ = OPS.deform_psroi_pool(torch.randn(1, 9, 5, 5), ROIS, torch.zeros(1, 2, 3, 3), 1.0,
                                   1, 3, 3, 3, 2, 0.1)
    assert out.shape == (1, 1, 3, 3)
    assert OPS.roi_align(torch.randn(1, 3, 5, 5), ROIS, 1.0, 2, 2, -1, False).shape == (1, 3, 2, 2)
    assert OPS._roi_align_backward(torch.randn(1, 3, 2, 2), ROIS, 1.0, 2, 2, 1, 3, 5, 5, -1,
                                   False).shape == (1, 3, 5, 5)
    assert OPS._batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long),
                            0.5).dtype == torch.int64
