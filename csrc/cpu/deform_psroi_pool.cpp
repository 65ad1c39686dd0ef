// CPU kernels of dcn_det::deform_psroi_pool, the official DeformablePSROIPooling operator
// (docs/DESIGN.md section 4.2).
//
// Forward: one task per output element (r, c, ph, pw), parallel with at::parallel_for.
//
// Backward, race-free without atomics:
//   * grad_input: every output element (r, c, ph, pw) reads only input channel
//     (c*G + gh(ph))*G + gw(pw), and that map from (c, gh, gw) to channels is injective. So the
//     backward runs one task per input channel; a task visits every RoI (whatever its image) and
//     the (ph, pw) bins whose (gh, gw) select this channel, and it alone writes that channel's
//     planes in all images. Every output element is visited by exactly one task.
//   * grad_offset: the same pass stores, per output element, dL/dw and dL/dh summed over its
//     samples (a private slot, so no collision); a second pass, one task per RoI, reduces those
//     over the channels of each offset class into grad_offset (each RoI owns its offset rows).
// This also makes the backward deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common/bilinear.h"
#include "common/op_checks.h"
#include "common/psroi_geometry.h"

namespace dcn_det {
namespace {

using psroi::RoiBox;

// The integer constants shared by forward and backward.
struct Dims {
  int64_t channels, height, width;  // input
  int64_t num_rois, output_dim, group, pooled, part, samples;
  int64_t channels_per_class;  // output_dim / C_off
  int64_t offset_channels;     // 2 * C_off (0 without offset)
};

template <typename T>
std::vector<RoiBox<T>> roi_boxes(const T* rois, double spatial_scale, const Dims& d) {
  std::vector<RoiBox<T>> boxes(d.num_rois);
  for (int64_t r = 0; r < d.num_rois; ++r)
    boxes[r] = psroi::roi_box(rois + r * 5, static_cast<T>(spatial_scale), d.pooled, d.samples);
  return boxes;
}

inline int64_t group_index(int64_t p, const Dims& d) {
  return psroi::group_index(p, d.group, d.pooled);
}

// Bilinear sample position (h, w) of bin (ph, pw) of output channel c in RoI r, before the
// per-sample step; tx/ty come from the offset (0 without one).
template <typename T>
inline void bin_start(const RoiBox<T>& box, const T* offset, T trans_std, int64_t r, int64_t c,
                      int64_t ph, int64_t pw, const Dims& d, T* hstart, T* wstart) {
  T tx = 0, ty = 0;
  if (offset != nullptr) {
    const int64_t cls = c / d.channels_per_class;
    const int64_t part_h = psroi::part_index(ph, d.part, d.pooled);
    const int64_t part_w = psroi::part_index(pw, d.part, d.pooled);
    const T* o = offset + r * d.offset_channels * d.part * d.part + part_h * d.part + part_w;
    tx = o[(2 * cls) * d.part * d.part] * trans_std;
    ty = o[(2 * cls + 1) * d.part * d.part] * trans_std;
  }
  psroi::bin_start(box, tx, ty, ph, pw, hstart, wstart);
}

// One in-range bilinear sample of a bin: the four neighbour offsets in a plane, their weights,
// the fractional position (dx, dy) and whether the unclamped position lay inside the plane
// along each axis (the clamp is flat outside: no position derivative along that axis there).
template <typename T>
struct Tap {
  int64_t i00, i10, i01, i11;
  T w00, w10, w01, w11;
  T dx, dy;
  bool w_in, h_in;
  T apply(const T* plane) const {
    return w00 * plane[i00] + w10 * plane[i10] + w01 * plane[i01] + w11 * plane[i11];
  }
};

// Channels per offset class from which the forward computes a bin's taps once for all of them.
constexpr int64_t kSharedTapsMinChannels = 2;

// The S*S samples of the bin starting at (hstart, wstart): writes the in-range ones to `taps`
// and returns their number, or -1 when the start is not finite (a NaN/inf offset).
template <typename T>
int64_t bin_taps(const RoiBox<T>& box, T hstart, T wstart, const Dims& d, Tap<T>* taps) {
  if (!std::isfinite(wstart) || !std::isfinite(hstart)) return -1;
  const int64_t S = d.samples, H = d.height, W = d.width;
  int64_t n = 0;
  for (int64_t ih = 0; ih < S; ++ih) {
    for (int64_t iw = 0; iw < S; ++iw) {
      const T w = wstart + static_cast<T>(iw) * box.sub_w;
      const T h = hstart + static_cast<T>(ih) * box.sub_h;
      bilinear::PsroiSample<T> s;
      if (!bilinear::psroi_sample(h, w, H, W, s)) continue;
      Tap<T>& t = taps[n++];
      t.w_in = s.w_in;
      t.h_in = s.h_in;
      t.dx = s.lx;
      t.dy = s.ly;
      t.i00 = s.y0 * W + s.x0;
      t.i10 = s.y1 * W + s.x0;
      t.i01 = s.y0 * W + s.x1;
      t.i11 = s.y1 * W + s.x1;
      t.w00 = (1 - s.lx) * (1 - s.ly);
      t.w10 = (1 - s.lx) * s.ly;
      t.w01 = s.lx * (1 - s.ly);
      t.w11 = s.lx * s.ly;
    }
  }
  return n;
}

// Writes one output element and its count: the mean of the n taps read from `plane`. n < 0 (a
// non-finite offset) propagates NaN with count 0, which keeps the backward out of the bin.
template <typename T>
inline void pool_bin(const Tap<T>* taps, int64_t n, const T* plane, T* out, T* cnt) {
  if (n < 0) {
    *out = std::numeric_limits<T>::quiet_NaN();
    *cnt = T(0);
    return;
  }
  T sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += taps[k].apply(plane);
  *out = n == 0 ? T(0) : sum / static_cast<T>(n);
  *cnt = static_cast<T>(n);
}

// The shared checks (common/op_checks.h), then the dimensions the kernels use.
Dims check_and_dims(const at::Tensor& input, const at::Tensor& rois,
                    const c10::optional<at::Tensor>& offset, int64_t output_dim,
                    int64_t group_size, int64_t pooled_size, int64_t part_size,
                    int64_t sample_per_part) {
  const checks::PSRoIShape s =
      checks::deform_psroi_pool(input, rois, offset, output_dim, group_size, pooled_size,
                                part_size, sample_per_part, checks::Backend::kCPU);
  return Dims{s.channels,      s.height,     s.width,   s.num_rois,
              output_dim,      group_size,   pooled_size, part_size,
              sample_per_part, s.channels_per_class, s.offset_channels};
}

// Errors (instead of reading out of bounds) on a batch index outside [0, N), and on
// non-finite coordinates, which would otherwise silently give an empty (zero) RoI.
template <typename T>
void check_rois_values(const T* rois, int64_t num_rois, int64_t batch) {
  for (int64_t r = 0; r < num_rois; ++r) {
    const T b = rois[r * 5];
    TORCH_CHECK(b >= T(0) && b < static_cast<T>(batch) && std::floor(b) == b,
                "deform_psroi_pool: rois[", r, ", 0] (batch index) is ", b,
                " but must be an integer in [0, ", batch, ")");
    for (int k = 1; k < 5; ++k) {
      TORCH_CHECK(std::isfinite(rois[r * 5 + k]), "deform_psroi_pool: rois[", r, ", ", k,
                  "] is ", rois[r * 5 + k], "; box coordinates must be finite");
    }
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& input_, const at::Tensor& rois_,
                                               const c10::optional<at::Tensor>& offset_,
                                               double spatial_scale, int64_t output_dim,
                                               int64_t group_size, int64_t pooled_size,
                                               int64_t part_size, int64_t sample_per_part,
                                               double trans_std) {
  const Dims d = check_and_dims(input_, rois_, offset_, output_dim, group_size, pooled_size,
                                part_size, sample_per_part);
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const bool has_offset = d.offset_channels > 0;
  const at::Tensor offset = has_offset ? offset_->contiguous() : at::Tensor();
  at::Tensor output = at::zeros({d.num_rois, output_dim, pooled_size, pooled_size}, input.options());
  at::Tensor count = at::zeros_like(output);
  if (d.num_rois == 0) return {output, count};

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_psroi_pool_forward", [&] {
    using T = scalar_t;
    const T* in = input.data_ptr<T>();
    const T* ro = rois.data_ptr<T>();
    const T* off = has_offset ? offset.data_ptr<T>() : nullptr;
    T* out = output.data_ptr<T>();
    T* cnt = count.data_ptr<T>();
    check_rois_values(ro, d.num_rois, input.size(0));
    const T tstd = static_cast<T>(trans_std);
    const int64_t P = d.pooled, S = d.samples, H = d.height, W = d.width;
    const std::vector<RoiBox<T>> boxes = roi_boxes(ro, spatial_scale, d);
    if (d.channels_per_class >= kSharedTapsMinChannels) {
      // Channels of one offset class share every sample position (Faster R-CNN's deformable
      // RoI pooling: all of them; plain pooling: all of them): compute the taps of a bin once
      // and gather them from each channel's plane. One task per (RoI, offset class).
      const int64_t classes = output_dim / d.channels_per_class;
      at::parallel_for(0, d.num_rois * classes, 1, [&](int64_t begin, int64_t end) {
        std::vector<Tap<T>> taps(S * S);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t r = task / classes, cls = task % classes;
          const int64_t c0 = cls * d.channels_per_class;
          const RoiBox<T>& box = boxes[r];
          for (int64_t ph = 0; ph < P; ++ph) {
            for (int64_t pw = 0; pw < P; ++pw) {
              T hstart, wstart;
              bin_start(box, off, tstd, r, c0, ph, pw, d, &hstart, &wstart);
              const int64_t n = bin_taps(box, hstart, wstart, d, taps.data());
              const int64_t gsel = group_index(ph, d) * d.group + group_index(pw, d);
              for (int64_t c = c0; c < c0 + d.channels_per_class; ++c) {
                const int64_t i = ((r * output_dim + c) * P + ph) * P + pw;
                const int64_t ch = c * d.group * d.group + gsel;
                pool_bin(taps.data(), n, in + (box.batch * d.channels + ch) * H * W, out + i,
                         cnt + i);
              }
            }
          }
        }
      });
      return;
    }
    // One channel per offset class (R-FCN's per-class offsets): RoIs innermost, so consecutive
    // tasks read the same input channel, which then stays in cache (RoI-major order was ~4x
    // slower single-threaded on R-FCN's 3969-channel score maps).
    const int64_t total = d.num_rois * output_dim * P * P;
    at::parallel_for(0, total, 64, [&](int64_t begin, int64_t end) {
      std::vector<Tap<T>> taps(S * S);
      for (int64_t j = begin; j < end; ++j) {
        const int64_t r = j % d.num_rois, bin = j / d.num_rois;
        const int64_t pw = bin % P, ph = (bin / P) % P, c = bin / (P * P);
        const int64_t i = ((r * output_dim + c) * P + ph) * P + pw;
        const RoiBox<T>& box = boxes[r];
        T hstart, wstart;
        bin_start(box, off, tstd, r, c, ph, pw, d, &hstart, &wstart);
        const int64_t ch = (c * d.group + group_index(ph, d)) * d.group + group_index(pw, d);
        const T* plane = in + (box.batch * d.channels + ch) * H * W;
        pool_bin(taps.data(), bin_taps(box, hstart, wstart, d, taps.data()), plane, out + i,
                 cnt + i);
      }
    });
  });
  return {output, count};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& rois_,
    const c10::optional<at::Tensor>& offset_, const at::Tensor& count_, double spatial_scale,
    int64_t output_dim, int64_t group_size, int64_t pooled_size, int64_t part_size,
    int64_t sample_per_part, double trans_std) {
  const Dims d = check_and_dims(input_, rois_, offset_, output_dim, group_size, pooled_size,
                                part_size, sample_per_part);
  checks::deform_psroi_pool_grad(grad_output_, count_, input_, d.num_rois, output_dim,
                                 pooled_size);
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor count = count_.contiguous();
  const bool has_offset = d.offset_channels > 0;
  const at::Tensor offset = has_offset ? offset_->contiguous() : at::Tensor();
  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = has_offset ? at::zeros_like(offset) : at::empty({0}, input.options());
  if (d.num_rois == 0) return {grad_input, grad_offset};

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_psroi_pool_backward", [&] {
    using T = scalar_t;
    const T* in = input.data_ptr<T>();
    const T* ro = rois.data_ptr<T>();
    const T* off = has_offset ? offset.data_ptr<T>() : nullptr;
    const T* go = grad_output.data_ptr<T>();
    const T* cnt = count.data_ptr<T>();
    T* gin = grad_input.data_ptr<T>();
    check_rois_values(ro, d.num_rois, input.size(0));
    const T tstd = static_cast<T>(trans_std);
    const int64_t P = d.pooled, S = d.samples, H = d.height, W = d.width, G = d.group;
    // bins[g] lists the pooled rows (or columns) p with group_index(p) == g.
    const std::vector<RoiBox<T>> boxes = roi_boxes(ro, spatial_scale, d);
    std::vector<std::vector<int64_t>> bins(G);
    for (int64_t p = 0; p < P; ++p) bins[group_index(p, d)].push_back(p);
    // dL/dw and dL/dh of each output element, summed over its samples (offset only).
    const bool want_offset = has_offset && trans_std != 0.0;
    at::Tensor dpos = want_offset ? at::zeros({d.num_rois, output_dim, P, P, 2}, input.options())
                                  : at::Tensor();
    T* dp = want_offset ? dpos.data_ptr<T>() : nullptr;

    // With several channels per offset class, every channel of a class samples the same
    // positions: compute each (RoI, class, bin)'s taps once up front (as the forward does).
    const bool shared = d.channels_per_class >= kSharedTapsMinChannels;
    const int64_t classes = output_dim / d.channels_per_class, SS = S * S;
    std::vector<Tap<T>> shared_taps(shared ? d.num_rois * classes * P * P * SS : 0);
    std::vector<int64_t> shared_n(shared ? d.num_rois * classes * P * P : 0);
    if (shared) {
      at::parallel_for(0, d.num_rois * classes, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t r = task / classes, cls = task % classes;
          for (int64_t b = 0; b < P * P; ++b) {
            const int64_t k = task * P * P + b;
            T hstart, wstart;
            bin_start(boxes[r], off, tstd, r, cls * d.channels_per_class, b / P, b % P, d,
                      &hstart, &wstart);
            shared_n[k] = bin_taps(boxes[r], hstart, wstart, d, &shared_taps[k * SS]);
          }
        }
      });
    }

    at::parallel_for(0, output_dim * G * G, 1, [&](int64_t begin, int64_t end) {
      std::vector<Tap<T>> local(SS);
      for (int64_t ch = begin; ch < end; ++ch) {
        const int64_t c = ch / (G * G), gh = (ch / G) % G, gw = ch % G;
        const int64_t cls = c / d.channels_per_class;
        for (int64_t r = 0; r < d.num_rois; ++r) {
          const RoiBox<T>& box = boxes[r];
          const T* plane = in + (box.batch * d.channels + ch) * H * W;
          T* gplane = gin + (box.batch * d.channels + ch) * H * W;
          for (const int64_t ph : bins[gh]) {
            for (const int64_t pw : bins[gw]) {
              const int64_t o = ((r * output_dim + c) * P + ph) * P + pw;
              if (cnt[o] <= T(0)) continue;
              const T g = go[o] / cnt[o];
              const Tap<T>* taps = local.data();
              int64_t n;
              if (shared) {
                const int64_t k = ((r * classes + cls) * P + ph) * P + pw;
                taps = &shared_taps[k * SS];
                n = shared_n[k];
              } else {
                T hstart, wstart;
                bin_start(box, off, tstd, r, c, ph, pw, d, &hstart, &wstart);
                n = bin_taps(box, hstart, wstart, d, local.data());
              }
              T dw_sum = 0, dh_sum = 0;
              for (int64_t k = 0; k < n; ++k) {
                const Tap<T>& t = taps[k];
                gplane[t.i00] += g * t.w00;
                gplane[t.i10] += g * t.w10;
                gplane[t.i01] += g * t.w01;
                gplane[t.i11] += g * t.w11;
                if (dp == nullptr) continue;
                const T v00 = plane[t.i00], v10 = plane[t.i10];
                const T v01 = plane[t.i01], v11 = plane[t.i11];
                if (t.w_in) dw_sum += (1 - t.dy) * (v01 - v00) + t.dy * (v11 - v10);
                if (t.h_in) dh_sum += (1 - t.dx) * (v10 - v00) + t.dx * (v11 - v01);
              }
              if (dp != nullptr) {
                dp[2 * o] = g * dw_sum;
                dp[2 * o + 1] = g * dh_sum;
              }
            }
          }
        }
      }
    });

    if (dp == nullptr) return;
    T* gof = grad_offset.data_ptr<T>();
    at::parallel_for(0, d.num_rois, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const RoiBox<T>& box = boxes[r];
        // w = ... + offset_x * trans_std * roi_w, h = ... + offset_y * trans_std * roi_h.
        const T kx = tstd * box.roi_w, ky = tstd * box.roi_h;
        T* g = gof + r * d.offset_channels * d.part * d.part;
        for (int64_t c = 0; c < output_dim; ++c) {
          const int64_t cls = c / d.channels_per_class;
          for (int64_t ph = 0; ph < P; ++ph) {
            const int64_t part_h = psroi::part_index(ph, d.part, P);
            for (int64_t pw = 0; pw < P; ++pw) {
              const int64_t part_w = psroi::part_index(pw, d.part, P);
              const int64_t o = ((r * output_dim + c) * P + ph) * P + pw;
              g[((2 * cls) * d.part + part_h) * d.part + part_w] += kx * dp[2 * o];
              g[((2 * cls + 1) * d.part + part_h) * d.part + part_w] += ky * dp[2 * o + 1];
            }
          }
        }
      }
    });
  });
  return {grad_input, grad_offset};
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) {
  m.impl("deform_psroi_pool", &forward_cpu);
  m.impl("_deform_psroi_pool_backward", &backward_cpu);
}

}  // namespace dcn_det
