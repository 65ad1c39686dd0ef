// RoIAlign on CPU with torchvision's semantics (docs/DESIGN.md section 4.3).
//
// For RoI r = [b, x1, y1, x2, y2] (input-image pixels) and bin (ph, pw):
//   off = aligned ? 0.5 : 0;   x1' = x1*scale - off, ... ;   roi_w = x2' - x1' (>= 1 if !aligned)
//   bin_w = roi_w / PW;   grid_w = sampling_ratio > 0 ? sampling_ratio : ceil(roi_w / PW)
//   x = x1' + pw*bin_w + (ix + 0.5) * bin_w / grid_w     (likewise y)
//   out = sum over the grid of bilinear(input[b, c], y, x) / max(grid_h*grid_w, 1)
// A sample outside [-1, H] x [-1, W] contributes 0; otherwise y, x are clamped to >= 0 and the
// high neighbour is clamped to the last row/column.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/bilinear.h"
#include "common/op_checks.h"

namespace dcn_det {
namespace {

// One bilinear sample: the flat offsets of its four neighbours in an (H, W) plane and their
// weights.
template <typename T>
struct Sample {
  int64_t p1, p2, p3, p4;
  T w1, w2, w3, w4;
};

// Returns false (and leaves `s` alone) for a sample outside [-1, H] x [-1, W] (the rule of
// common/bilinear.h); it contributes nothing, and is dropped rather than given zero weights so
// that an inf/NaN in the input's first pixel cannot leak into it as 0 * inf.
template <typename T>
bool make_sample(T y, T x, int64_t height, int64_t width, Sample<T>& s) {
  int64_t idx[4];
  T w[4];
  if (!bilinear::roi_align_sample(y, x, height, width, idx, w)) return false;
  s = {idx[0], idx[1], idx[2], idx[3], w[0], w[1], w[2], w[3]};
  return true;
}

// The geometry of one RoI: where its bins start and how they are sampled.
template <typename T>
struct RoiGeometry {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
  T count;  // number of samples per bin, at least 1
};

template <typename T>
RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int64_t pooled_height,
                            int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? T(0.5) : T(0);
  const T start_w = roi[1] * spatial_scale - offset;
  const T start_h = roi[2] * spatial_scale - offset;
  T roi_w = roi[3] * spatial_scale - offset - start_w;
  T roi_h = roi[4] * spatial_scale - offset - start_h;
  if (!aligned) {
    // Legacy behaviour: malformed RoIs are forced to be at least 1x1.
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  const T bin_h = roi_h / static_cast<T>(pooled_height);
  const T bin_w = roi_w / static_cast<T>(pooled_width);
  // Adaptive sampling: about one sample per input pixel (roi size <= 0 gives an empty grid).
  const int64_t grid_h =
      sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(bin_h));
  const int64_t grid_w =
      sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(bin_w));
  const T count = static_cast<T>(std::max<int64_t>(grid_h * grid_w, 1));
  return {static_cast<int64_t>(roi[0]), start_h, start_w, bin_h, bin_w, grid_h, grid_w, count};
}

// Fills `samples` with the in-image samples of one RoI, bin-major; the samples of bin
// `ph*PW + pw` are [bin_end[bin-1], bin_end[bin]) (bin_end[-1] taken as 0).
template <typename T>
void precompute_samples(const RoiGeometry<T>& g, int64_t pooled_height, int64_t pooled_width,
                        int64_t height, int64_t width, std::vector<Sample<T>>& samples,
                        std::vector<int64_t>& bin_end) {
  samples.clear();
  bin_end.clear();
  const int64_t gh = std::max<int64_t>(g.grid_h, 0), gw = std::max<int64_t>(g.grid_w, 0);
  samples.reserve(pooled_height * pooled_width * gh * gw);
  Sample<T> s;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      for (int64_t iy = 0; iy < gh; ++iy) {
        const T y = g.start_h + ph * g.bin_h + (iy + T(0.5)) * g.bin_h / static_cast<T>(gh);
        for (int64_t ix = 0; ix < gw; ++ix) {
          const T x = g.start_w + pw * g.bin_w + (ix + T(0.5)) * g.bin_w / static_cast<T>(gw);
          if (make_sample(y, x, height, width, s)) samples.push_back(s);
        }
      }
      bin_end.push_back(static_cast<int64_t>(samples.size()));
    }
  }
}

// Checks, before any parallel work, what would otherwise index out of bounds or cast a
// non-finite size to an integer: batch indices in [0, batch_size) and finite coordinates.
template <typename T>
void check_rois_values(const T* rois, int64_t num_rois, int64_t batch_size) {
  for (int64_t r = 0; r < num_rois; ++r) {
    const T* roi = rois + r * 5;
    for (int k = 0; k < 5; ++k) {
      TORCH_CHECK(std::isfinite(static_cast<double>(roi[k])), "roi_align: rois[", r, ", ", k,
                  "] is ", static_cast<double>(roi[k]), "; every RoI value must be finite");
    }
    const double b = static_cast<double>(roi[0]);
    TORCH_CHECK(b >= 0 && b < static_cast<double>(batch_size) && b == std::floor(b),
                "roi_align: rois[", r, ", 0] (the batch index) is ", b,
                " but must be an integer in [0, ", batch_size, ")");
  }
}

// Both kernels work channels-last: the four neighbours of a sample are then four contiguous
// runs of C values, so the innermost loop runs over channels and vectorises, and the per-RoI
// samples are computed once for all channels.

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                 double spatial_scale, int64_t pooled_height,
                                 int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  checks::roi_align_forward(input, rois, pooled_height, pooled_width, checks::Backend::kCPU);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  if (num_rois == 0 || channels == 0) {
    return at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  }

  const at::Tensor in = input.permute({0, 2, 3, 1}).contiguous();  // (N, H, W, C)
  const at::Tensor rs = rois.contiguous();
  const int64_t bins = pooled_height * pooled_width;
  at::Tensor out = at::zeros({num_rois, bins, channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    const scalar_t* in_data = in.data_ptr<scalar_t>();
    const scalar_t* roi_data = rs.data_ptr<scalar_t>();
    scalar_t* out_data = out.data_ptr<scalar_t>();
    check_rois_values(roi_data, num_rois, input.size(0));
    const int64_t plane = height * width;
    at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
      std::vector<Sample<scalar_t>> samples;
      std::vector<int64_t> bin_end;
      for (int64_t r = begin; r < end; ++r) {
        const RoiGeometry<scalar_t> g =
            roi_geometry(roi_data + r * 5, static_cast<scalar_t>(spatial_scale), pooled_height,
                         pooled_width, sampling_ratio, aligned);
        precompute_samples(g, pooled_height, pooled_width, height, width, samples, bin_end);
        if (samples.empty()) continue;  // nothing in the image pools to 0, as zeros() holds
        const scalar_t* base = in_data + g.batch * plane * channels;
        const Sample<scalar_t>* s = samples.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          scalar_t* __restrict__ acc = out_data + (r * bins + bin) * channels;
          for (const Sample<scalar_t>* stop = samples.data() + bin_end[bin]; s < stop; ++s) {
            const scalar_t* __restrict__ v1 = base + s->p1 * channels;
            const scalar_t* __restrict__ v2 = base + s->p2 * channels;
            const scalar_t* __restrict__ v3 = base + s->p3 * channels;
            const scalar_t* __restrict__ v4 = base + s->p4 * channels;
            const scalar_t w1 = s->w1, w2 = s->w2, w3 = s->w3, w4 = s->w4;
            for (int64_t c = 0; c < channels; ++c) {
              acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
            }
          }
          for (int64_t c = 0; c < channels; ++c) acc[c] /= g.count;
        }
      }
    });
  });
  return out.view({num_rois, pooled_height, pooled_width, channels})
      .permute({0, 3, 1, 2})
      .contiguous();
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  checks::roi_align_backward(grad, rois, pooled_height, pooled_width, batch_size, channels,
                             height, width, checks::Backend::kCPU);
  const int64_t num_rois = rois.size(0);
  if (num_rois == 0 || batch_size * channels * height * width == 0) {
    return at::zeros({batch_size, channels, height, width}, grad.options());
  }

  const at::Tensor g_out = grad.permute({0, 2, 3, 1}).contiguous();  // (R, PH, PW, C)
  const at::Tensor rs = rois.contiguous();
  at::Tensor grad_in = at::zeros({batch_size, height, width, channels}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    const scalar_t* go = g_out.data_ptr<scalar_t>();
    const scalar_t* roi_data = rs.data_ptr<scalar_t>();
    scalar_t* gi = grad_in.data_ptr<scalar_t>();
    check_rois_values(roi_data, num_rois, batch_size);
    const int64_t plane = height * width, bins = pooled_height * pooled_width;
    // Race-free: each task owns a range of channels, hence disjoint grad_input elements, and
    // visits every RoI; the samples are recomputed per task (cheap next to the channels).
    at::parallel_for(0, channels, 1, [&](int64_t c_begin, int64_t c_end) {
      std::vector<Sample<scalar_t>> samples;
      std::vector<int64_t> bin_end;
      std::vector<scalar_t> scaled(c_end - c_begin);
      for (int64_t r = 0; r < num_rois; ++r) {
        const RoiGeometry<scalar_t> g =
            roi_geometry(roi_data + r * 5, static_cast<scalar_t>(spatial_scale), pooled_height,
                         pooled_width, sampling_ratio, aligned);
        precompute_samples(g, pooled_height, pooled_width, height, width, samples, bin_end);
        if (samples.empty()) continue;
        scalar_t* base = gi + g.batch * plane * channels + c_begin;
        const Sample<scalar_t>* s = samples.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          const scalar_t* src = go + (r * bins + bin) * channels + c_begin;
          for (int64_t c = 0; c < c_end - c_begin; ++c) scaled[c] = src[c] / g.count;
          for (const Sample<scalar_t>* stop = samples.data() + bin_end[bin]; s < stop; ++s) {
            // The four neighbours may coincide at the border, so these must not be restrict.
            scalar_t* d1 = base + s->p1 * channels;
            scalar_t* d2 = base + s->p2 * channels;
            scalar_t* d3 = base + s->p3 * channels;
            scalar_t* d4 = base + s->p4 * channels;
            const scalar_t w1 = s->w1, w2 = s->w2, w3 = s->w3, w4 = s->w4;
            for (int64_t c = 0; c < c_end - c_begin; ++c) {
              const scalar_t gv = scaled[c];
              d1[c] += gv * w1;
              d2[c] += gv * w2;
              d3[c] += gv * w3;
              d4[c] += gv * w4;
            }
          }
        }
      }
    });
  });
  return grad_in.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace dcn_det
