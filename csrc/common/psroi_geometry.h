// The official (deformable) PS-RoI pooling geometry (docs/DESIGN.md section 4.2), for the CPU
// and CUDA kernels: where a RoI's bins lie in feature-map pixels, which position-sensitive
// group and offset part a bin reads, and where a bin's first sample lies.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace dcn_det {
namespace psroi {

// C's round(): half away from zero, as in the official kernel.
template <typename T>
DCN_HD T round_half_away(T v) {
#if defined(__CUDA_ARCH__)
  return round(v);
#else
  return std::round(v);
#endif
}

// One RoI in feature-map coordinates.
template <typename T>
struct RoiBox {
  int64_t batch;
  T x1, y1, roi_w, roi_h, bin_w, bin_h, sub_w, sub_h;
};

// roi = [batch_index, x1, y1, x2, y2] in input-image pixels (any scalar type S); the corners
// are rounded to whole pixels and the RoI is at least 0.1 feature pixels wide.
template <typename T, typename S>
DCN_HD RoiBox<T> roi_box(const S* roi, T spatial_scale, int64_t pooled, int64_t samples) {
  RoiBox<T> b;
  b.batch = static_cast<int64_t>(roi[0]);
  b.x1 = round_half_away(static_cast<T>(roi[1])) * spatial_scale - T(0.5);
  b.y1 = round_half_away(static_cast<T>(roi[2])) * spatial_scale - T(0.5);
  const T x2 = (round_half_away(static_cast<T>(roi[3])) + T(1)) * spatial_scale - T(0.5);
  const T y2 = (round_half_away(static_cast<T>(roi[4])) + T(1)) * spatial_scale - T(0.5);
  // max(., 0.1) written as std::max does it, so a NaN size stays NaN.
  b.roi_w = x2 - b.x1 < T(0.1) ? T(0.1) : x2 - b.x1;
  b.roi_h = y2 - b.y1 < T(0.1) ? T(0.1) : y2 - b.y1;
  b.bin_w = b.roi_w / static_cast<T>(pooled);
  b.bin_h = b.roi_h / static_cast<T>(pooled);
  b.sub_w = b.bin_w / static_cast<T>(samples);
  b.sub_h = b.bin_h / static_cast<T>(samples);
  return b;
}

// The position-sensitive group (0..group-1) of pooled row or column p.
DCN_HD int64_t group_index(int64_t p, int64_t group, int64_t pooled) {
  const int64_t g = p * group / pooled;
  return g < group - 1 ? g : group - 1;
}

// The offset part (0..part-1) of pooled row or column p.
DCN_HD int64_t part_index(int64_t p, int64_t part, int64_t pooled) { return p * part / pooled; }

// The first sample of bin (ph, pw), moved by the normalised offset (tx, ty) (already times
// trans_std; 0 without offsets) scaled by the RoI's size.
template <typename T>
DCN_HD void bin_start(const RoiBox<T>& box, T tx, T ty, int64_t ph, int64_t pw, T* hstart,
                      T* wstart) {
  *wstart = static_cast<T>(pw) * box.bin_w + box.x1 + tx * box.roi_w;
  *hstart = static_cast<T>(ph) * box.bin_h + box.y1 + ty * box.roi_h;
}

}  // namespace psroi
}  // namespace dcn_det
