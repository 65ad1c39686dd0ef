// Argument checks of the ops, one definition for every backend's kernels.
//
// A direct torch.ops call with bad arguments must fail with a message that names the argument
// and the expected shape, instead of reading out of bounds. These checks read tensor metadata
// only (shapes, dtypes, devices), never the data, so a CUDA kernel can run them without a
// host-device sync. Checks that read values (RoI batch indices, finite coordinates) belong to
// each backend: the CPU kernels scan the RoIs before their parallel loops.
//
// Host code only (ATen types); the kernels' math is in bilinear.h and psroi_geometry.h.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace dcn_det {
namespace checks {

// The dtypes a backend's kernels compute in: float32 and float64 on the CPU; the CUDA kernels
// also take float16 and bfloat16 (accumulating in float32).
enum class Backend { kCPU, kCUDA };

inline const char* backend_name(Backend b) { return b == Backend::kCPU ? "CPU" : "CUDA"; }

inline void kernel_dtype(const char* op, const char* name, const at::Tensor& t, Backend b) {
  const auto s = t.scalar_type();
  const bool ok = s == at::kFloat || s == at::kDouble ||
                  (b == Backend::kCUDA && (s == at::kHalf || s == at::kBFloat16));
  TORCH_CHECK(ok, op, ": the ", backend_name(b), " kernel takes ",
              b == Backend::kCPU ? "float32 and float64" : "float16, bfloat16, float32 and float64",
              " ", name, ", got ", s);
}

// `t` has `ref`'s dtype and device: an op computes in one dtype on one device.
inline void like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                 const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device());
}

inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// ---------------------------------------------------------------------------------------
// deform_conv2d (docs/DESIGN.md section 4.1)

struct ConvShape {
  int64_t n, c_in, h, w, c_out, kh, kw, h_out, w_out;
};

// Every shape relation of deform_conv2d's arguments; returns the shape of the problem.
inline ConvShape deform_conv2d(const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                               const std::optional<at::Tensor>& bias, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                               int64_t dil_w, int64_t groups, int64_t offset_groups, Backend b) {
  const char* op = "deform_conv2d";
  TORCH_CHECK(input.dim() == 4, "deform_conv2d: input must be (N, C_in, H, W), got ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be (C_out, C_in/groups, kh, kw), got ",
              weight.sizes());
  TORCH_CHECK(offset.dim() == 4, "deform_conv2d: offset must be (N, 2*G*kh*kw, H_out, W_out), got ",
              offset.sizes());
  TORCH_CHECK(stride_h > 0 && stride_w > 0, "deform_conv2d: stride must be positive, got (",
              stride_h, ", ", stride_w, ")");
  TORCH_CHECK(dil_h > 0 && dil_w > 0, "deform_conv2d: dilation must be positive, got (", dil_h,
              ", ", dil_w, ")");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "deform_conv2d: padding must be >= 0, got (", pad_h, ", ",
              pad_w, ")");
  TORCH_CHECK(groups > 0 && offset_groups > 0, "deform_conv2d: groups (", groups,
              ") and offset_groups (", offset_groups, ") must be positive");
  ConvShape s{input.size(0), input.size(1), input.size(2), input.size(3), weight.size(0),
              weight.size(2), weight.size(3), 0, 0};
  TORCH_CHECK(s.kh > 0 && s.kw > 0, "deform_conv2d: kernel size must be positive, got weight ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) * groups == s.c_in, "deform_conv2d: weight ", weight.sizes(),
              " with groups=", groups, " needs input with ", weight.size(1) * groups,
              " channels, got input ", input.sizes());
  TORCH_CHECK(s.c_out % groups == 0, "deform_conv2d: C_out=", s.c_out,
              " must be divisible by groups=", groups);
  TORCH_CHECK(s.c_in % offset_groups == 0, "deform_conv2d: C_in=", s.c_in,
              " must be divisible by offset_groups=", offset_groups);
  // Checked before dividing: C++ division truncates toward zero, so a negative span would
  // otherwise give one output row.
  const int64_t span_h = s.h + 2 * pad_h - (dil_h * (s.kh - 1) + 1);
  const int64_t span_w = s.w + 2 * pad_w - (dil_w * (s.kw - 1) + 1);
  TORCH_CHECK(span_h >= 0 && span_w >= 0, "deform_conv2d: input ", input.sizes(),
              " is too small for weight ", weight.sizes(), " with padding (", pad_h, ", ", pad_w,
              ") and dilation (", dil_h, ", ", dil_w, ")");
  s.h_out = span_h / stride_h + 1;
  s.w_out = span_w / stride_w + 1;
  TORCH_CHECK(s.h * s.w < (int64_t(1) << 31), "deform_conv2d: input planes larger than 2^31");
  const int64_t taps = s.kh * s.kw;
  const std::vector<int64_t> off_shape = {s.n, 2 * offset_groups * taps, s.h_out, s.w_out};
  TORCH_CHECK(offset.sizes() == at::IntArrayRef(off_shape), "deform_conv2d: offset must be ",
              at::IntArrayRef(off_shape), ", got ", offset.sizes());
  kernel_dtype(op, "input", input, b);
  like(op, "weight", weight, "input", input);
  like(op, "offset", offset, "input", input);
  if (given(mask)) {
    const std::vector<int64_t> m_shape = {s.n, offset_groups * taps, s.h_out, s.w_out};
    TORCH_CHECK(mask->sizes() == at::IntArrayRef(m_shape), "deform_conv2d: mask must be ",
                at::IntArrayRef(m_shape), ", got ", mask->sizes());
    like(op, "mask", *mask, "input", input);
  }
  if (given(bias)) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.c_out, "deform_conv2d: bias must be (",
                s.c_out, ",), got ", bias->sizes());
    like(op, "bias", *bias, "input", input);
  }
  return s;
}

// The incoming gradient of deform_conv2d's backward: the output's shape
// (N, C_out, H_out, W_out), dtype and device.
inline void deform_conv2d_grad(const at::Tensor& grad_output, const at::Tensor& input,
                               at::IntArrayRef out_shape) {
  TORCH_CHECK(grad_output.sizes() == out_shape, "deform_conv2d backward: grad_output must be ",
              out_shape, ", got ", grad_output.sizes());
  like("deform_conv2d backward", "grad_output", grad_output, "input", input);
}

// ---------------------------------------------------------------------------------------
// deform_psroi_pool (docs/DESIGN.md section 4.2)

struct PSRoIShape {
  int64_t channels, height, width, num_rois;
  // Offset classes share output channels in groups of channels_per_class; offset_channels is
  // offset.size(1) (0 without an offset: plain PS-RoI pooling).
  int64_t channels_per_class, offset_channels;
};

inline PSRoIShape deform_psroi_pool(const at::Tensor& input, const at::Tensor& rois,
                                    const std::optional<at::Tensor>& offset, int64_t output_dim,
                                    int64_t group_size, int64_t pooled_size, int64_t part_size,
                                    int64_t sample_per_part, Backend b) {
  const char* op = "deform_psroi_pool";
  TORCH_CHECK(input.dim() == 4, "deform_psroi_pool: input must be (N, C, H, W), got shape ",
              input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "deform_psroi_pool: rois must be (R, 5) rows [batch_index, x1, y1, x2, y2], got shape ",
              rois.sizes());
  kernel_dtype(op, "input", input, b);
  like(op, "rois", rois, "input", input);
  TORCH_CHECK(output_dim > 0 && group_size > 0 && pooled_size > 0 && part_size > 0 &&
                  sample_per_part > 0,
              "deform_psroi_pool: output_dim, group_size, pooled_size, part_size and "
              "sample_per_part must be positive, got ",
              output_dim, ", ", group_size, ", ", pooled_size, ", ", part_size, ", ",
              sample_per_part);
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0,
              "deform_psroi_pool: input must have a non-empty spatial size, got shape ",
              input.sizes());
  TORCH_CHECK(input.size(1) == output_dim * group_size * group_size,
              "deform_psroi_pool: input must have output_dim*group_size^2 = ",
              output_dim * group_size * group_size, " channels, got shape ", input.sizes());
  PSRoIShape s{input.size(1), input.size(2), input.size(3), rois.size(0), output_dim, 0};
  if (given(offset)) {
    const at::Tensor& o = *offset;
    like(op, "offset", o, "input", input);
    TORCH_CHECK(o.dim() == 4 && o.size(0) == rois.size(0) && o.size(1) > 0 &&
                    o.size(1) % 2 == 0 && o.size(2) == part_size && o.size(3) == part_size,
                "deform_psroi_pool: offset must be (R=", rois.size(0), ", 2*C_off, part_size=",
                part_size, ", part_size=", part_size, "), got shape ", o.sizes());
    const int64_t classes = o.size(1) / 2;
    TORCH_CHECK(output_dim % classes == 0, "deform_psroi_pool: output_dim (", output_dim,
                ") must be divisible by the offset classes C_off = offset.size(1)/2 = ", classes);
    s.channels_per_class = output_dim / classes;
    s.offset_channels = o.size(1);
  }
  return s;
}

// The incoming gradient and the forward's sample counts of deform_psroi_pool's backward.
inline void deform_psroi_pool_grad(const at::Tensor& grad_output, const at::Tensor& count,
                                   const at::Tensor& input, int64_t num_rois, int64_t output_dim,
                                   int64_t pooled_size) {
  const std::vector<int64_t> out_shape{num_rois, output_dim, pooled_size, pooled_size};
  TORCH_CHECK(grad_output.sizes() == out_shape && count.sizes() == out_shape,
              "_deform_psroi_pool_backward: grad_output and count must be (R, output_dim, P, P) = ",
              at::IntArrayRef(out_shape), ", got ", grad_output.sizes(), " and ", count.sizes());
  like("_deform_psroi_pool_backward", "grad_output", grad_output, "input", input);
  like("_deform_psroi_pool_backward", "count", count, "input", input);
}

// ---------------------------------------------------------------------------------------
// roi_align (docs/DESIGN.md section 4.3)

// The RoIs against the tensor they pool from (the input) or scatter back from (the gradient).
inline void roi_align_rois(const at::Tensor& rois, const at::Tensor& ref, const char* ref_name,
                           int64_t pooled_height, int64_t pooled_width, Backend b) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "roi_align: rois must have shape (R, 5) rows [batch_index, x1, y1, x2, y2], got ",
              rois.sizes());
  kernel_dtype("roi_align", ref_name, ref, b);
  like("roi_align", "rois", rois, ref_name, ref);
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0,
              "roi_align: output size must be positive, got (", pooled_height, ", ", pooled_width,
              ")");
}

inline void roi_align_forward(const at::Tensor& input, const at::Tensor& rois,
                              int64_t pooled_height, int64_t pooled_width, Backend b) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must have shape (N, C, H, W), got ",
              input.sizes());
  roi_align_rois(rois, input, "input", pooled_height, pooled_width, b);
  TORCH_CHECK(rois.size(0) == 0 || input.size(1) == 0 || (input.size(2) > 0 && input.size(3) > 0),
              "roi_align: input must have H, W > 0 when there are RoIs, got ", input.sizes());
}

inline void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                               int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                               int64_t channels, int64_t height, int64_t width, Backend b) {
  roi_align_rois(rois, grad, "grad", pooled_height, pooled_width, b);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "roi_align backward: grad must have shape (R, C, PH, PW) = (", rois.size(0), ", ",
              channels, ", ", pooled_height, ", ", pooled_width, "), got ", grad.sizes());
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
              "roi_align backward: input size must be non-negative, got (", batch_size, ", ",
              channels, ", ", height, ", ", width, ")");
}

// ---------------------------------------------------------------------------------------
// nms and _batched_nms (docs/DESIGN.md section 4.5)

inline void nms(const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "nms: boxes must have shape (N, 4) XYXY, got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "nms: scores must have shape (N,) = (", boxes.size(0), ",), got ", scores.sizes());
  like("nms", "scores", scores, "boxes", boxes);
}

inline void batched_nms(const at::Tensor& boxes, const at::Tensor& scores,
                        const at::Tensor& idxs) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "_batched_nms: boxes must have shape (N, 4) XYXY, got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "_batched_nms: scores must have shape (N,) = (", boxes.size(0), ",), got ",
              scores.sizes());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == boxes.size(0),
              "_batched_nms: idxs must have shape (N,) = (", boxes.size(0), ",), got ",
              idxs.sizes());
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()) && at::isFloatingType(scores.scalar_type()),
              "_batched_nms: boxes and scores must be floating point, got ",
              boxes.scalar_type(), " and ", scores.scalar_type());
  TORCH_CHECK(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false),
              "_batched_nms: idxs must be an integer tensor, got ", idxs.scalar_type());
  TORCH_CHECK(scores.device() == boxes.device() && idxs.device() == boxes.device(),
              "_batched_nms: boxes, scores and idxs must be on one device, got ", boxes.device(),
              ", ", scores.device(), " and ", idxs.device());
}

}  // namespace checks
}  // namespace dcn_det
