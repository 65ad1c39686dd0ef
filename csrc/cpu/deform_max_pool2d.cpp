// Deformable max pooling, CPU forward and backward kernels.
//
// Semantics: docs/DESIGN.md section 4.4. Strategy:
//   1. A sample table per (offset group g, tap k, output position p) holds the four corner
//      indices of the clamped bilinear sample and their weights, or a "skipped" mark. It does
//      not depend on the channel, so it is built once per image and shared by the C/G
//      channels of the group (the backward table also holds the weights' derivatives).
//   2. Forward: tasks are (channel, chunk of positions); each scans the taps in order and keeps
//      the first maximum, writing the output and the winning tap (argmax, -1 if none).
//   3. Backward: only the winning tap of each output is differentiated. grad_input is scattered
//      by channel tasks (each owns its grad planes); grad_offset is reduced over the channels
//      of an offset group by (g, chunk) tasks, each owning the offset slots of its positions.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common/bilinear.h"

namespace dcn_det {
namespace {

struct Geometry {
  int64_t n, c, h, w, kh, kw, h_out, w_out;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, offset_groups;
  int64_t K() const { return kh * kw; }
  int64_t L() const { return h_out * w_out; }
  int64_t HW() const { return h * w; }
};

// One clamped bilinear sample: 4 corner indices into an (H, W) plane and their weights.
// idx[0] < 0 marks a skipped tap (the sample point lies outside (-1, H) x (-1, W)).
template <typename scalar_t>
struct Sample {
  int32_t idx[4];
  scalar_t w[4];
};

// The derivatives of the weights by y and x; zero on an axis whose clamp is active, because
// the clamped coordinate (hence the value) does not move with the offset there.
template <typename scalar_t>
struct Deriv {
  scalar_t wy[4];
  scalar_t wx[4];
};

constexpr int64_t kChunk = 256;

// Fills s (and d when given) for the sample point (y, x) by the clamped rule of
// common/bilinear.h; a skipped point gets idx[0] = -1. At y = H-1 the two rows coincide, so the
// floor-based one-sided derivative there is 0 (the value is constant for y >= H-1).
template <typename scalar_t>
inline void sample_at(scalar_t y, scalar_t x, int64_t H, int64_t W, Sample<scalar_t>& s,
                      Deriv<scalar_t>* d) {
  scalar_t ly, lx;
  bool free_y, free_x;
  if (!bilinear::clamped_open(y, x, H, W, s.idx, ly, lx, free_y, free_x)) {
    for (int i = 0; i < 4; ++i) {
      s.idx[i] = -1;
      s.w[i] = 0;
      if (d) d->wy[i] = d->wx[i] = 0;
    }
    return;
  }
  bilinear::corner_weights(ly, lx, s.w);
  if (!d) return;
  bilinear::corner_weight_grads(ly, lx, d->wy, d->wx);
  for (int i = 0; i < 4; ++i) {
    if (!free_y) d->wy[i] = 0;
    if (!free_x) d->wx[i] = 0;
  }
}

// Tables of one image, entry (g*K + k)*L + p; deriv is null in the forward.
template <typename scalar_t>
void build_tables(const Geometry& G, const scalar_t* off_n, Sample<scalar_t>* table,
                  Deriv<scalar_t>* deriv) {
  const int64_t K = G.K(), L = G.L();
  at::parallel_for(0, G.offset_groups * K, 1, [&](int64_t b, int64_t e) {
    for (int64_t gk = b; gk < e; ++gk) {
      const int64_t g = gk / K, k = gk % K, u = k / G.kw, v = k % G.kw;
      const scalar_t* oy = off_n + (g * 2 * K + 2 * k) * L;
      const scalar_t* ox = oy + L;
      for (int64_t p = 0; p < L; ++p) {
        const int64_t i = p / G.w_out, j = p % G.w_out;
        const scalar_t y = static_cast<scalar_t>(i * G.stride_h - G.pad_h + u * G.dil_h) + oy[p];
        const scalar_t x = static_cast<scalar_t>(j * G.stride_w - G.pad_w + v * G.dil_w) + ox[p];
        sample_at(y, x, G.h, G.w, table[gk * L + p], deriv ? &deriv[gk * L + p] : nullptr);
      }
    }
  });
}

template <typename scalar_t>
inline scalar_t interpolate(const Sample<scalar_t>& s, const scalar_t* plane) {
  return s.w[0] * plane[s.idx[0]] + s.w[1] * plane[s.idx[1]] + s.w[2] * plane[s.idx[2]] +
         s.w[3] * plane[s.idx[3]];
}

// Output and argmax of one image. The scan keeps the first maximum in tap order; a NaN value
// wins over any number and the first NaN stays (torch.argmax's rule, which the grid_sample
// composite for CUDA relies on).
template <typename scalar_t>
void pool_forward(const Geometry& G, const scalar_t* in_n, const Sample<scalar_t>* table,
                  scalar_t* out_n, int64_t* arg_n) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), cpg = G.c / G.offset_groups;
  const int64_t chunks = ceil_div(L, kChunk);
  at::parallel_for(0, G.c * chunks, 1, [&](int64_t b, int64_t e) {
    scalar_t best[kChunk];
    int64_t arg[kChunk];
    for (int64_t task = b; task < e; ++task) {
      const int64_t c = task / chunks, p0 = (task % chunks) * kChunk;
      const int64_t np = std::min(kChunk, L - p0);
      const scalar_t* plane = in_n + c * HW;
      const Sample<scalar_t>* tg = table + (c / cpg) * K * L + p0;
      for (int64_t q = 0; q < np; ++q) {
        best[q] = 0;
        arg[q] = -1;
      }
      for (int64_t k = 0; k < K; ++k) {
        const Sample<scalar_t>* s = tg + k * L;
        for (int64_t q = 0; q < np; ++q) {
          if (s[q].idx[0] < 0) continue;
          const scalar_t v = interpolate(s[q], plane);
          if (arg[q] < 0 || v > best[q] || (std::isnan(v) && !std::isnan(best[q]))) {
            best[q] = v;
            arg[q] = k;
          }
        }
      }
      std::copy(best, best + np, out_n + c * L + p0);
      std::copy(arg, arg + np, arg_n + c * L + p0);
    }
  });
}

// grad_input[n]: each output's gradient goes to the corners of its winning sample. Tasks are
// channels, so every grad plane is written by a single thread.
template <typename scalar_t>
void input_grad(const Geometry& G, const scalar_t* gout_n, const int64_t* arg_n,
                const Sample<scalar_t>* table, scalar_t* gin_n) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), cpg = G.c / G.offset_groups;
  at::parallel_for(0, G.c, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const Sample<scalar_t>* tg = table + (c / cpg) * K * L;
      scalar_t* plane = gin_n + c * HW;
      for (int64_t p = 0; p < L; ++p) {
        const int64_t k = arg_n[c * L + p];
        if (k < 0) continue;
        const Sample<scalar_t>& s = tg[k * L + p];
        const scalar_t g = gout_n[c * L + p];
        for (int i = 0; i < 4; ++i) plane[s.idx[i]] += s.w[i] * g;
      }
    }
  });
}

// grad_offset[n]: the winning tap's (dy, dx) slots get the gradient times the derivative of
// the sampled value, summed over the channels of the offset group; other slots stay 0.
template <typename scalar_t>
void offset_grad(const Geometry& G, const scalar_t* in_n, const scalar_t* gout_n,
                 const int64_t* arg_n, const Sample<scalar_t>* table,
                 const Deriv<scalar_t>* deriv, scalar_t* goff_n) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), cpg = G.c / G.offset_groups;
  const int64_t chunks = ceil_div(L, kChunk);
  at::parallel_for(0, G.offset_groups * chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t g = task / chunks, p0 = (task % chunks) * kChunk;
      const int64_t p1 = std::min(L, p0 + kChunk);
      scalar_t* goff_g = goff_n + g * 2 * K * L;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const scalar_t* plane = in_n + c * HW;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t k = arg_n[c * L + p];
          if (k < 0) continue;
          const int64_t e_idx = (g * K + k) * L + p;
          const Sample<scalar_t>& s = table[e_idx];
          const Deriv<scalar_t>& d = deriv[e_idx];
          const scalar_t gv = gout_n[c * L + p];
          scalar_t ay = 0, ax = 0;
          for (int i = 0; i < 4; ++i) {
            const scalar_t v = plane[s.idx[i]];
            ay += d.wy[i] * v;
            ax += d.wx[i] * v;
          }
          goff_g[2 * k * L + p] += gv * ay;
          goff_g[(2 * k + 1) * L + p] += gv * ax;
        }
      }
    }
  });
}

// Checks every shape relation and returns the geometry; a direct torch.ops call with bad
// arguments fails here with a message instead of reading out of bounds.
Geometry check_args(const at::Tensor& input, const at::Tensor& offset, int64_t kh, int64_t kw,
                    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                    int64_t dil_h, int64_t dil_w, int64_t offset_groups) {
  TORCH_CHECK(input.dim() == 4, "deform_max_pool2d: input must be (N, C, H, W), got ",
              input.sizes());
  TORCH_CHECK(offset.dim() == 4,
              "deform_max_pool2d: offset must be (N, 2*G*kh*kw, H_out, W_out), got ",
              offset.sizes());
  TORCH_CHECK(kh > 0 && kw > 0, "deform_max_pool2d: kernel size must be positive, got (", kh,
              ", ", kw, ")");
  TORCH_CHECK(stride_h > 0 && stride_w > 0, "deform_max_pool2d: stride must be positive, got (",
              stride_h, ", ", stride_w, ")");
  TORCH_CHECK(dil_h > 0 && dil_w > 0, "deform_max_pool2d: dilation must be positive, got (",
              dil_h, ", ", dil_w, ")");
  TORCH_CHECK(pad_h >= 0 && pad_w >= 0, "deform_max_pool2d: padding must be >= 0, got (", pad_h,
              ", ", pad_w, ")");
  TORCH_CHECK(offset_groups > 0, "deform_max_pool2d: offset_groups must be positive, got ",
              offset_groups);
  Geometry G{input.size(0), input.size(1), input.size(2), input.size(3), kh, kw, 0, 0,
             stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, offset_groups};
  TORCH_CHECK(G.c % offset_groups == 0, "deform_max_pool2d: C=", G.c,
              " must be divisible by offset_groups=", offset_groups);
  // Checked before dividing: C++ division truncates toward zero, so a negative span would
  // otherwise give one output row.
  const int64_t span_h = G.h + 2 * pad_h - (dil_h * (kh - 1) + 1);
  const int64_t span_w = G.w + 2 * pad_w - (dil_w * (kw - 1) + 1);
  TORCH_CHECK(span_h >= 0 && span_w >= 0, "deform_max_pool2d: input ", input.sizes(),
              " is too small for a ", kh, "x", kw, " kernel with padding (", pad_h, ", ", pad_w,
              ") and dilation (", dil_h, ", ", dil_w, ")");
  G.h_out = span_h / stride_h + 1;
  G.w_out = span_w / stride_w + 1;
  TORCH_CHECK(G.HW() < (int64_t(1) << 31), "deform_max_pool2d: input planes larger than 2^31");
  const std::vector<int64_t> off_shape = {G.n, 2 * offset_groups * G.K(), G.h_out, G.w_out};
  TORCH_CHECK(offset.sizes() == at::IntArrayRef(off_shape), "deform_max_pool2d: offset must be ",
              at::IntArrayRef(off_shape), ", got ", offset.sizes());
  TORCH_CHECK(offset.scalar_type() == input.scalar_type(),
              "deform_max_pool2d: input and offset must share one dtype, got ",
              input.scalar_type(), " and ", offset.scalar_type());
  TORCH_CHECK(input.device().is_cpu() && offset.device().is_cpu(),
              "deform_max_pool2d (CPU kernel): all tensors must be on the CPU");
  return G;
}

std::tuple<at::Tensor, at::Tensor> deform_max_pool2d_forward_cpu(
    const at::Tensor& input_, const at::Tensor& offset_, int64_t kh, int64_t kw,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
    int64_t dil_w, int64_t offset_groups) {
  const Geometry G = check_args(input_, offset_, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h,
                                dil_w, offset_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  at::Tensor output = at::zeros({G.n, G.c, G.h_out, G.w_out}, input.options());
  at::Tensor argmax = at::full({G.n, G.c, G.h_out, G.w_out}, -1, input.options().dtype(at::kLong));
  // No image pixels: every tap is skipped, so the output is 0 and no tap wins.
  if (G.n == 0 || G.c == 0 || G.HW() == 0) return {output, argmax};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_max_pool2d_forward_cpu", [&] {
    std::vector<Sample<scalar_t>> table(G.offset_groups * G.K() * G.L());
    for (int64_t n = 0; n < G.n; ++n) {
      build_tables<scalar_t>(G, offset.data_ptr<scalar_t>() + n * offset.stride(0), table.data(),
                             nullptr);
      pool_forward(G, input.data_ptr<scalar_t>() + n * input.stride(0), table.data(),
                   output.data_ptr<scalar_t>() + n * output.stride(0),
                   argmax.data_ptr<int64_t>() + n * argmax.stride(0));
    }
  });
  return {output, argmax};
}

std::tuple<at::Tensor, at::Tensor> deform_max_pool2d_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& argmax_, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
    int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t offset_groups) {
  const Geometry G = check_args(input_, offset_, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h,
                                dil_w, offset_groups);
  const std::vector<int64_t> out_shape = {G.n, G.c, G.h_out, G.w_out};
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef(out_shape),
              "deform_max_pool2d backward: grad_output must be ", at::IntArrayRef(out_shape),
              ", got ", grad_output_.sizes());
  TORCH_CHECK(grad_output_.scalar_type() == input_.scalar_type() && grad_output_.device().is_cpu(),
              "deform_max_pool2d backward: grad_output must be a CPU tensor of dtype ",
              input_.scalar_type());
  TORCH_CHECK(argmax_.sizes() == at::IntArrayRef(out_shape),
              "deform_max_pool2d backward: argmax must be ", at::IntArrayRef(out_shape), ", got ",
              argmax_.sizes());
  TORCH_CHECK(argmax_.scalar_type() == at::kLong && argmax_.device().is_cpu(),
              "deform_max_pool2d backward: argmax must be a CPU int64 tensor, got ",
              argmax_.scalar_type());
  at::Tensor grad_input = at::zeros_like(input_, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::zeros_like(offset_, at::MemoryFormat::Contiguous);
  if (G.n == 0 || G.c == 0 || G.HW() == 0) return {grad_input, grad_offset};
  // The tap indices address the sample table: out-of-range values would read outside it.
  const auto range = at::aminmax(argmax_);
  const int64_t lo = std::get<0>(range).item<int64_t>(), hi = std::get<1>(range).item<int64_t>();
  TORCH_CHECK(lo >= -1 && hi < G.K(), "deform_max_pool2d backward: argmax values must lie in [-1, ",
              G.K() - 1, "] (the winning tap or -1), got [", lo, ", ", hi, "]");
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor grad_output = grad_output_.contiguous(), argmax = argmax_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_max_pool2d_backward_cpu", [&] {
    std::vector<Sample<scalar_t>> table(G.offset_groups * G.K() * G.L());
    std::vector<Deriv<scalar_t>> deriv(G.offset_groups * G.K() * G.L());
    for (int64_t n = 0; n < G.n; ++n) {
      const scalar_t* in_n = input.data_ptr<scalar_t>() + n * input.stride(0);
      const scalar_t* gout_n = grad_output.data_ptr<scalar_t>() + n * grad_output.stride(0);
      const int64_t* arg_n = argmax.data_ptr<int64_t>() + n * argmax.stride(0);
      build_tables<scalar_t>(G, offset.data_ptr<scalar_t>() + n * offset.stride(0), table.data(),
                             deriv.data());
      input_grad(G, gout_n, arg_n, table.data(),
                 grad_input.data_ptr<scalar_t>() + n * grad_input.stride(0));
      offset_grad(G, in_n, gout_n, arg_n, table.data(), deriv.data(),
                  grad_offset.data_ptr<scalar_t>() + n * grad_offset.stride(0));
    }
  });
  return {grad_input, grad_offset};
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) {
  m.impl("deform_max_pool2d", &deform_max_pool2d_forward_cpu);
  m.impl("_deform_max_pool2d_backward", &deform_max_pool2d_backward_cpu);
}

}  // namespace dcn_det
