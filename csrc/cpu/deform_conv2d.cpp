// Deformable convolution (v1 and modulated v2), CPU forward and backward kernels.
//
// Semantics: docs/DESIGN.md section 4.1 (torchvision's deform_conv2d). Strategy:
//   1. A sample table per (offset group g, tap k, output position p) holds the four corner
//      indices of the bilinear sample and their weights (zero for corners outside the image).
//      It does not depend on the channel, so it is built once per image and reused by the
//      C_in/G channels of the group.
//   2. im2col gathers columns (C_in*K, span) for a span of the L = H_out*W_out positions (as
//      many spans as keep the buffer <= 16 MiB); the convolution is then one ATen GEMM per
//      conv group and span, exactly like a dense conv lowered to GEMM.
//   3. Backward: grad_columns = W^T @ grad_out (GEMM), col2im scatters them into grad_input
//      (parallel over channels, so no two threads touch the same plane), grad_offset and
//      grad_mask are reduced over the channels of an offset group (parallel over (g, k,
//      position chunk), each task owning its output slots), grad_weight = grad_out @ col^T.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/bilinear.h"
#include "common/op_checks.h"

namespace dcn_det {
namespace {

struct Geometry {
  int64_t n, c_in, h, w, c_out, kh, kw, h_out, w_out;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups;
  int64_t K() const { return kh * kw; }
  int64_t L() const { return h_out * w_out; }
  int64_t HW() const { return h * w; }
};

// One bilinear sample: 4 corner indices into an (H, W) plane (0 for absent corners) and the
// weights used by im2col/col2im (already multiplied by the mask).
template <typename scalar_t>
struct Sample {
  int32_t idx[4];
  scalar_t w[4];
};

// What the offset/mask gradient needs besides Sample: the unmasked weights (grad_mask) and
// the derivatives of the weights by y and x times the mask (grad_offset). Kept in a separate
// table so im2col/col2im stream only the 32 bytes of Sample per entry.
template <typename scalar_t>
struct Deriv {
  scalar_t wu[4];
  scalar_t wy[4];
  scalar_t wx[4];
};

// Cache blocking: a chunk of output positions keeps the tables of all taps of an offset group
// (kChunk*K entries) in L2 while a block of channels reuses them.
constexpr int64_t kChunk = 256;
constexpr int64_t kChanBlock = 16;

// Output positions [begin, end) whose columns are in the buffer; a column row holds size()
// entries. Splitting L into spans keeps the column buffers small (see kColumnBytes).
struct Span {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// Column buffers are at most this big: they stay in the last-level cache between im2col and
// the GEMM, and below glibc's 32 MiB mmap threshold, so the allocator reuses them instead of
// handing fresh zero-filled pages (page faults) to every call.
constexpr int64_t kColumnBytes = int64_t(16) << 20;

// Tables of one image, entry (g*K + k)*L + p. mask_n is null for v1 (mask = 1); deriv is
// null in the forward.
template <typename scalar_t>
void build_tables(const Geometry& G, const scalar_t* off_n, const scalar_t* mask_n,
                  Sample<scalar_t>* table, Deriv<scalar_t>* deriv) {
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
        Sample<scalar_t>& s = table[gk * L + p];
        scalar_t ly, lx;
        bool valid[4];
        bilinear::zero_padded(y, x, G.h, G.w, s.idx, valid, ly, lx);
        const scalar_t m = mask_n ? mask_n[gk * L + p] : scalar_t(1);
        scalar_t wb[4];
        bilinear::corner_weights(ly, lx, wb);
        for (int c = 0; c < 4; ++c) s.w[c] = valid[c] ? wb[c] * m : scalar_t(0);
        if (!deriv) continue;
        // Absent corners contribute nothing to the offset gradient.
        scalar_t dy[4], dx[4];
        bilinear::corner_weight_grads(ly, lx, dy, dx);
        Deriv<scalar_t>& d = deriv[gk * L + p];
        for (int c = 0; c < 4; ++c) {
          d.wu[c] = valid[c] ? wb[c] : scalar_t(0);
          d.wy[c] = valid[c] ? dy[c] * m : scalar_t(0);
          d.wx[c] = valid[c] ? dx[c] * m : scalar_t(0);
        }
      }
    }
  });
}

// Calls fn(pack, c) with pack = std::integral_constant<int, 4> for packs of four channels in
// [c0, c1), then with <int, 1> for the rest; the inner loops load each table entry once per pack.
template <typename Fn>
inline void for_channel_packs(int64_t c0, int64_t c1, Fn&& fn) {
  int64_t c = c0;
  for (; c + 4 <= c1; c += 4) fn(std::integral_constant<int, 4>{}, c);
  for (; c < c1; ++c) fn(std::integral_constant<int, 1>{}, c);
}

// Inner loops over a chunk of positions for R channels (plane pointers pl, column rows).
template <int R, typename scalar_t>
inline void gather_rows(const Sample<scalar_t>* s, int64_t np, const scalar_t* const* pl,
                        scalar_t* const* out) {
  for (int64_t q = 0; q < np; ++q) {
    const Sample<scalar_t> t = s[q];
    for (int r = 0; r < R; ++r) {
      out[r][q] = t.w[0] * pl[r][t.idx[0]] + t.w[1] * pl[r][t.idx[1]] +
                  t.w[2] * pl[r][t.idx[2]] + t.w[3] * pl[r][t.idx[3]];
    }
  }
}

template <int R, typename scalar_t>
inline void scatter_rows(const Sample<scalar_t>* s, int64_t np, const scalar_t* const* gc,
                         scalar_t* const* pl) {
  for (int64_t q = 0; q < np; ++q) {
    const Sample<scalar_t> t = s[q];
    for (int r = 0; r < R; ++r) {
      const scalar_t v = gc[r][q];
      pl[r][t.idx[0]] += t.w[0] * v;
      pl[r][t.idx[1]] += t.w[1] * v;
      pl[r][t.idx[2]] += t.w[2] * v;
      pl[r][t.idx[3]] += t.w[3] * v;
    }
  }
}

template <int R, typename scalar_t>
inline void reduce_rows(const Sample<scalar_t>* s, const Deriv<scalar_t>* d, int64_t np,
                        const scalar_t* const* pl, const scalar_t* const* gc, scalar_t* gy,
                        scalar_t* gx, scalar_t* gm) {
  for (int64_t q = 0; q < np; ++q) {
    const Sample<scalar_t> t = s[q];
    const Deriv<scalar_t> e = d[q];
    scalar_t ay = 0, ax = 0, am = 0;
    for (int r = 0; r < R; ++r) {
      const scalar_t v0 = pl[r][t.idx[0]], v1 = pl[r][t.idx[1]];
      const scalar_t v2 = pl[r][t.idx[2]], v3 = pl[r][t.idx[3]];
      const scalar_t g = gc[r][q];
      ay += g * (e.wy[0] * v0 + e.wy[1] * v1 + e.wy[2] * v2 + e.wy[3] * v3);
      ax += g * (e.wx[0] * v0 + e.wx[1] * v1 + e.wx[2] * v2 + e.wx[3] * v3);
      am += g * (e.wu[0] * v0 + e.wu[1] * v1 + e.wu[2] * v2 + e.wu[3] * v3);
    }
    gy[q] += ay;
    gx[q] += ax;
    gm[q] += am;
  }
}

// columns (C_in*K, L): row c*K + k holds channel c sampled at tap k for every position.
// Tasks are (offset group, channel block, position chunk); any split is race-free because
// every column entry is written once.
template <typename scalar_t>
void im2col(const Geometry& G, const scalar_t* in_n, const Sample<scalar_t>* table,
            Span span, scalar_t* col) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), Ls = span.size();
  const int64_t cpg = G.c_in / G.offset_groups;
  const int64_t cblocks = ceil_div(cpg, kChanBlock), chunks = ceil_div(Ls, kChunk);
  at::parallel_for(0, G.offset_groups * cblocks * chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t g = task / (cblocks * chunks), rest = task % (cblocks * chunks);
      const int64_t c0 = g * cpg + (rest / chunks) * kChanBlock;
      const int64_t c1 = std::min(c0 + kChanBlock, (g + 1) * cpg);
      const int64_t p0 = span.begin + (rest % chunks) * kChunk;
      const int64_t np = std::min(kChunk, span.end - p0);
      for (int64_t k = 0; k < K; ++k) {
        const Sample<scalar_t>* s = table + (g * K + k) * L + p0;
        for_channel_packs(c0, c1, [&](auto pack, int64_t c) {
          constexpr int R = decltype(pack)::value;
          const scalar_t* pl[R];
          scalar_t* out[R];
          for (int r = 0; r < R; ++r) {
            pl[r] = in_n + (c + r) * HW;
            out[r] = col + ((c + r) * K + k) * Ls + (p0 - span.begin);
          }
          gather_rows<R>(s, np, pl, out);
        });
      }
    }
  });
}

// grad_input[n] += grad_columns scattered back through the samples. Tasks are channel blocks
// (inside one offset group), so every grad plane is written by a single thread.
template <typename scalar_t>
void col2im(const Geometry& G, const scalar_t* gcol, const Sample<scalar_t>* table, Span span,
            scalar_t* gin_n) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), Ls = span.size();
  const int64_t cpg = G.c_in / G.offset_groups;
  constexpr int64_t kBlock = kChanBlock / 2;  // smaller: more tasks for the threads
  const int64_t cblocks = ceil_div(cpg, kBlock), chunks = ceil_div(Ls, kChunk);
  at::parallel_for(0, G.offset_groups * cblocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t g = task / cblocks;
      const int64_t c0 = g * cpg + (task % cblocks) * kBlock;
      const int64_t c1 = std::min(c0 + kBlock, (g + 1) * cpg);
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t p0 = span.begin + chunk * kChunk, np = std::min(kChunk, span.end - p0);
        for (int64_t k = 0; k < K; ++k) {
          const Sample<scalar_t>* s = table + (g * K + k) * L + p0;
          for_channel_packs(c0, c1, [&](auto pack, int64_t c) {
            constexpr int R = decltype(pack)::value;
            const scalar_t* gc[R];
            scalar_t* pl[R];
            for (int r = 0; r < R; ++r) {
              gc[r] = gcol + ((c + r) * K + k) * Ls + (p0 - span.begin);
              pl[r] = gin_n + (c + r) * HW;
            }
            scatter_rows<R>(s, np, gc, pl);
          });
        }
      }
    }
  });
}

// grad_offset and grad_mask of one image, reduced over the channels of each offset group.
// Tasks are (g, k, chunk of positions); each owns its slots of the outputs.
template <typename scalar_t>
void offset_mask_grad(const Geometry& G, const scalar_t* in_n, const scalar_t* gcol,
                      const Sample<scalar_t>* table, const Deriv<scalar_t>* deriv, Span span,
                      scalar_t* goff_n, scalar_t* gmask_n) {
  const int64_t K = G.K(), L = G.L(), HW = G.HW(), Ls = span.size();
  const int64_t cpg = G.c_in / G.offset_groups;
  const int64_t chunks = ceil_div(Ls, kChunk);
  at::parallel_for(0, G.offset_groups * K * chunks, 1, [&](int64_t b, int64_t e) {
    scalar_t gy[kChunk], gx[kChunk], gm[kChunk];
    for (int64_t task = b; task < e; ++task) {
      const int64_t gk = task / chunks, p0 = span.begin + (task % chunks) * kChunk;
      const int64_t g = gk / K, k = gk % K, np = std::min(kChunk, span.end - p0);
      const Sample<scalar_t>* s = table + gk * L + p0;
      const Deriv<scalar_t>* d = deriv + gk * L + p0;
      for (int64_t q = 0; q < np; ++q) gy[q] = gx[q] = gm[q] = 0;
      for_channel_packs(g * cpg, (g + 1) * cpg, [&](auto pack, int64_t c) {
        constexpr int R = decltype(pack)::value;
        const scalar_t* pl[R];
        const scalar_t* gc[R];
        for (int r = 0; r < R; ++r) {
          pl[r] = in_n + (c + r) * HW;
          gc[r] = gcol + ((c + r) * K + k) * Ls + (p0 - span.begin);
        }
        reduce_rows<R>(s, d, np, pl, gc, gy, gx, gm);
      });
      scalar_t* oy = goff_n + (g * 2 * K + 2 * k) * L + p0;
      scalar_t* ox = oy + L;
      for (int64_t q = 0; q < np; ++q) {
        oy[q] = gy[q];
        ox[q] = gx[q];
      }
      if (gmask_n) {
        scalar_t* om = gmask_n + gk * L + p0;
        for (int64_t q = 0; q < np; ++q) om[q] = gm[q];
      }
    }
  });
}

// Equal spans covering [0, L) whose column buffers (rows x span) fit in kColumnBytes.
std::vector<Span> make_spans(int64_t rows, int64_t L, int64_t elem_size) {
  const int64_t fit = kColumnBytes / std::max<int64_t>(1, rows * elem_size);
  const int64_t count = ceil_div(L, std::max(kChunk, fit));
  const int64_t len = ceil_div(L, count);
  std::vector<Span> spans;
  for (int64_t b = 0; b < L; b += len) spans.push_back({b, std::min(L, b + len)});
  return spans;
}

// The shared checks (common/op_checks.h), then the geometry the kernels use.
Geometry check_args(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias,
                    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                    int64_t dil_h, int64_t dil_w, int64_t groups, int64_t offset_groups) {
  const checks::ConvShape s =
      checks::deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                            dil_h, dil_w, groups, offset_groups, checks::Backend::kCPU);
  return Geometry{s.n,     s.c_in,   s.h,      s.w,      s.c_out, s.kh,  s.kw,  s.h_out, s.w_out,
                  stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups};
}

at::Tensor deform_conv2d_forward_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                                     const at::Tensor& offset_,
                                     const std::optional<at::Tensor>& mask_,
                                     const std::optional<at::Tensor>& bias_, int64_t stride_h,
                                     int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                     int64_t dil_h, int64_t dil_w, int64_t groups,
                                     int64_t offset_groups) {
  const Geometry G = check_args(input_, weight_, offset_, mask_, bias_, stride_h, stride_w, pad_h,
                                pad_w, dil_h, dil_w, groups, offset_groups);
  const bool has_mask = mask_.has_value() && mask_->defined();
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = has_mask ? mask_->contiguous() : at::Tensor();
  const int64_t K = G.K(), L = G.L();
  // Conv group g uses weight rows [g*cog, (g+1)*cog) and column rows [g*ckg, (g+1)*ckg).
  const int64_t cog = G.c_out / groups, ckg = weight_.size(1) * K;
  const at::Tensor w2 = weight_.contiguous().view({G.c_out, ckg});
  at::Tensor output = at::zeros({G.n, G.c_out, G.h_out, G.w_out}, input.options());
  if (G.n == 0 || G.HW() == 0) {
    // No image pixels: every sample is outside, so the output is the bias alone.
    if (has_bias) output.add_(bias_->view({1, G.c_out, 1, 1}));
    return output;
  }
  const std::vector<Span> spans = make_spans(G.c_in * K, L, input.element_size());
  at::Tensor buffer = at::empty({G.c_in * K * spans[0].size()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_forward_cpu", [&] {
    std::vector<Sample<scalar_t>> table(G.offset_groups * K * L);
    for (int64_t n = 0; n < G.n; ++n) {
      const scalar_t* off_n = offset.data_ptr<scalar_t>() + n * offset.stride(0);
      const scalar_t* mask_n = has_mask ? mask.data_ptr<scalar_t>() + n * mask.stride(0) : nullptr;
      build_tables<scalar_t>(G, off_n, mask_n, table.data(), nullptr);
      const at::Tensor out2 = output[n].view({G.c_out, L});
      for (const Span& sp : spans) {
        at::Tensor cols = buffer.narrow(0, 0, G.c_in * K * sp.size()).view({G.c_in * K, sp.size()});
        im2col(G, input.data_ptr<scalar_t>() + n * input.stride(0), table.data(), sp,
               cols.data_ptr<scalar_t>());
        for (int64_t g = 0; g < groups; ++g) {
          at::Tensor out_g = out2.narrow(0, g * cog, cog).narrow(1, sp.begin, sp.size());
          at::mm_out(out_g, w2.narrow(0, g * cog, cog), cols.narrow(0, g * ckg, ckg));
        }
      }
    }
  });
  if (has_bias) output.add_(bias_->view({1, G.c_out, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
deform_conv2d_backward_cpu(const at::Tensor& grad_output_, const at::Tensor& input_,
                           const at::Tensor& weight_, const at::Tensor& offset_,
                           const std::optional<at::Tensor>& mask_,
                           const std::optional<at::Tensor>& bias_, int64_t stride_h,
                           int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                           int64_t dil_w, int64_t groups, int64_t offset_groups) {
  const Geometry G = check_args(input_, weight_, offset_, mask_, bias_, stride_h, stride_w, pad_h,
                                pad_w, dil_h, dil_w, groups, offset_groups);
  checks::deform_conv2d_grad(grad_output_, input_, {G.n, G.c_out, G.h_out, G.w_out});
  const bool has_mask = mask_.has_value() && mask_->defined();
  const bool has_bias = bias_.has_value() && bias_->defined();
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor mask = has_mask ? mask_->contiguous() : at::Tensor();
  const int64_t K = G.K(), L = G.L();
  const int64_t cog = G.c_out / groups, ckg = weight_.size(1) * K;
  const at::Tensor w2 = weight_.contiguous().view({G.c_out, ckg});

  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = has_mask ? at::zeros_like(mask) : at::empty({0}, input.options());
  at::Tensor grad_weight = at::zeros_like(weight_, at::MemoryFormat::Contiguous);
  at::Tensor grad_bias = has_bias ? grad_output.sum({0, 2, 3}) : at::empty({0}, input.options());
  // With no image pixels the columns are zero: only grad_bias is non-zero.
  if (G.n == 0 || G.HW() == 0) return {grad_input, grad_weight, grad_offset, grad_mask, grad_bias};

  const at::Tensor gw2 = grad_weight.view({G.c_out, ckg});
  const std::vector<Span> spans = make_spans(G.c_in * K, L, input.element_size());
  at::Tensor buffer = at::empty({G.c_in * K * spans[0].size()}, input.options());
  at::Tensor grad_buffer = at::empty({G.c_in * K * spans[0].size()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward_cpu", [&] {
    std::vector<Sample<scalar_t>> table(G.offset_groups * K * L);
    std::vector<Deriv<scalar_t>> deriv(G.offset_groups * K * L);
    for (int64_t n = 0; n < G.n; ++n) {
      const scalar_t* in_n = input.data_ptr<scalar_t>() + n * input.stride(0);
      const scalar_t* off_n = offset.data_ptr<scalar_t>() + n * offset.stride(0);
      const scalar_t* mask_n = has_mask ? mask.data_ptr<scalar_t>() + n * mask.stride(0) : nullptr;
      scalar_t* gmask_n = has_mask ? grad_mask.data_ptr<scalar_t>() + n * grad_mask.stride(0)
                                   : nullptr;
      build_tables(G, off_n, mask_n, table.data(), deriv.data());
      const at::Tensor go2 = grad_output[n].view({G.c_out, L});
      for (const Span& sp : spans) {
        const int64_t rows = G.c_in * K;
        at::Tensor cols = buffer.narrow(0, 0, rows * sp.size()).view({rows, sp.size()});
        at::Tensor gcols = grad_buffer.narrow(0, 0, rows * sp.size()).view({rows, sp.size()});
        im2col(G, in_n, table.data(), sp, cols.data_ptr<scalar_t>());
        for (int64_t g = 0; g < groups; ++g) {
          const at::Tensor go_g = go2.narrow(0, g * cog, cog).narrow(1, sp.begin, sp.size());
          gw2.narrow(0, g * cog, cog).addmm_(go_g, cols.narrow(0, g * ckg, ckg).t());
          at::Tensor gcols_g = gcols.narrow(0, g * ckg, ckg);
          at::mm_out(gcols_g, w2.narrow(0, g * cog, cog).t(), go_g);
        }
        col2im(G, gcols.data_ptr<scalar_t>(), table.data(), sp,
               grad_input.data_ptr<scalar_t>() + n * grad_input.stride(0));
        offset_mask_grad(G, in_n, gcols.data_ptr<scalar_t>(), table.data(), deriv.data(), sp,
                         grad_offset.data_ptr<scalar_t>() + n * grad_offset.stride(0), gmask_n);
      }
    }
  });
  return {grad_input, grad_weight, grad_offset, grad_mask, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_forward_cpu);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace dcn_det
