// Schemas of every dcn_det operator and the Python module init.
//
// Kernels are registered per device in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu with
// TORCH_LIBRARY_IMPL(dcn_det, <Device>, m). Fake (meta) kernels, autograd formulas and the
// autocast policy are registered from Python (dcn_det/ops/*.py) so that torch.compile and
// torch.export can trace every op. The semantics are those of docs/DESIGN.md section 4.
#include <Python.h>
#include <torch/library.h>

// Importing dcn_det._C runs the static TORCH_LIBRARY registrations of this shared library.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "dcn_det native operators (torch.ops.dcn_det)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(dcn_det, m) {
  // Deformable convolution v1 (mask undefined) and modulated v2 (mask given).
  // input (N, C_in, H, W); weight (C_out, C_in/groups, kh, kw);
  // offset (N, 2*G*kh*kw, H_out, W_out); mask (N, G*kh*kw, H_out, W_out); bias (C_out,).
  m.def(
      "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor? mask, Tensor? bias, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, "
      "int groups, int offset_groups) -> Tensor");
  // Returns (grad_input, grad_weight, grad_offset, grad_mask, grad_bias); grad_mask is an
  // empty tensor when mask is undefined and grad_bias is empty when bias is undefined.
  m.def(
      "_deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor offset, "
      "Tensor? mask, Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, "
      "int dilation_h, int dilation_w, int groups, int offset_groups) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // The official DeformablePSROIPooling operator (offset undefined = no_trans).
  // input (N, output_dim*group_size^2, H, W); rois (R, 5) [batch, x1, y1, x2, y2];
  // offset (R, 2*C_off, part_size, part_size). Returns (output (R, output_dim, P, P),
  // count (R, output_dim, P, P): the number of samples that were not skipped).
  m.def(
      "deform_psroi_pool(Tensor input, Tensor rois, Tensor? offset, float spatial_scale, "
      "int output_dim, int group_size, int pooled_size, int part_size, int sample_per_part, "
      "float trans_std) -> (Tensor, Tensor)");
  // Returns (grad_input, grad_offset); grad_offset is empty when offset is undefined.
  m.def(
      "_deform_psroi_pool_backward(Tensor grad_output, Tensor input, Tensor rois, Tensor? offset, "
      "Tensor count, float spatial_scale, int output_dim, int group_size, int pooled_size, "
      "int part_size, int sample_per_part, float trans_std) -> (Tensor, Tensor)");

  // Deformable max pooling. input (N, C, H, W); offset (N, 2*G*kh*kw, H_out, W_out) with
  // deform_conv2d's layout, G = offset_groups. Returns (output (N, C, H_out, W_out),
  // argmax (N, C, H_out, W_out) int64: the winning tap k = u*kw + v, -1 where every tap was
  // skipped and the output is 0). The backward differentiates the winning tap only.
  m.def(
      "deform_max_pool2d(Tensor input, Tensor offset, int kernel_h, int kernel_w, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int offset_groups) "
      "-> (Tensor, Tensor)");
  // Returns (grad_input, grad_offset).
  m.def(
      "_deform_max_pool2d_backward(Tensor grad_output, Tensor input, Tensor offset, "
      "Tensor argmax, int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, "
      "int pad_w, int dilation_h, int dilation_w, int offset_groups) -> (Tensor, Tensor)");

  // RoIAlign with torchvision semantics. rois (R, 5) [batch, x1, y1, x2, y2].
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor");

  // Greedy NMS: boxes (N, 4) XYXY, scores (N,) -> kept indices (K,) int64 by decreasing score.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // NMS within each category idxs (N,) integer: boxes of different categories never suppress
  // each other. CPU kernel only; dcn_det.ops.batched_nms uses it for CPU tensors (eager and
  // traced) and the class-offset nms on CUDA, with the same result.
  m.def("_batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}
