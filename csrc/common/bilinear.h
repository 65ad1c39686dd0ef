// Bilinear sampling rules of the ops (docs/DESIGN.md section 4), for the CPU and CUDA kernels.
//
// Every op reproduces the border rule of the operator it implements, so there are four rules,
// one per family. They share the corner order and the weights:
//   corner 0 = (y0, x0), 1 = (y0, x1), 2 = (y1, x0), 3 = (y1, x1),
//   weights (1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly lx, with ly = y - y0 and lx = x - x0.
// Coordinates are in input-map pixels (pixel centres at integers). Every range test is written
// so that a NaN coordinate fails it and can never become an index.
#pragma once

#include "common/host_device.h"

namespace dcn_det {
namespace bilinear {

template <typename T>
DCN_HD void corner_weights(T ly, T lx, T w[4]) {
  w[0] = (1 - ly) * (1 - lx);
  w[1] = (1 - ly) * lx;
  w[2] = ly * (1 - lx);
  w[3] = ly * lx;
}

// d(weight)/dy and d(weight)/dx of each corner at fixed corners (floor-based weights).
template <typename T>
DCN_HD void corner_weight_grads(T ly, T lx, T wy[4], T wx[4]) {
  wy[0] = -(1 - lx);
  wy[1] = -lx;
  wy[2] = 1 - lx;
  wy[3] = lx;
  wx[0] = -(1 - ly);
  wx[1] = 1 - ly;
  wx[2] = -ly;
  wx[3] = ly;
}

// Rule 1, zero padding (deform_conv2d, as torchvision): the map is zero outside; a corner
// contributes only if it lies inside. Fills the flat corner indices (0 for absent corners),
// which corners are inside, and (ly, lx); returns false, everything zero, when the point is
// outside [-1, H) x [-1, W) (no corner inside).
//
// y = -1 exactly is kept: its value is 0 (the one inside corner, row 0, has weight ly = 0) but
// its derivative by y is row 0's value, the one-sided derivative that floor-based weights give
// at every integer, and what the float64 reference and torchvision return. Cutting y = -1 off
// would zero the offset gradient of every border tap of a zero-offset, padding-1 convolution.
template <typename T, typename Index>
DCN_HD bool zero_padded(T y, T x, int64_t H, int64_t W, Index idx[4], bool valid[4], T& ly,
                        T& lx) {
  for (int i = 0; i < 4; ++i) {
    idx[i] = 0;
    valid[i] = false;
  }
  ly = lx = 0;
  if (!(y >= -1 && y < H && x >= -1 && x < W)) return false;
  const int64_t y0 = floor_from_minus_one(y), x0 = floor_from_minus_one(x);
  const int64_t y1 = y0 + 1, x1 = x0 + 1;
  ly = y - static_cast<T>(y0);
  lx = x - static_cast<T>(x0);
  const bool vy0 = y0 >= 0, vy1 = y1 <= H - 1, vx0 = x0 >= 0, vx1 = x1 <= W - 1;
  valid[0] = vy0 && vx0;
  valid[1] = vy0 && vx1;
  valid[2] = vy1 && vx0;
  valid[3] = vy1 && vx1;
  if (valid[0]) idx[0] = static_cast<Index>(y0 * W + x0);
  if (valid[1]) idx[1] = static_cast<Index>(y0 * W + x1);
  if (valid[2]) idx[2] = static_cast<Index>(y1 * W + x0);
  if (valid[3]) idx[3] = static_cast<Index>(y1 * W + x1);
  return true;
}

// Rule 2, clamp on the open range (deform_max_pool2d): a point in (-1, H) x (-1, W) is
// clamped to [0, H-1] x [0, W-1], with y0 = floor(y) and y1 = min(y0 + 1, H - 1), so every
// corner lies inside and at y = H-1 the two rows coincide. Returns false for a point outside
// (a skipped tap). free_y / free_x say whether the clamp was inactive on that axis: where it
// is active the value does not move with the coordinate, so its derivative there is 0.
template <typename T, typename Index>
DCN_HD bool clamped_open(T y, T x, int64_t H, int64_t W, Index idx[4], T& ly, T& lx,
                         bool& free_y, bool& free_x) {
  const T hi_y = static_cast<T>(H - 1), hi_x = static_cast<T>(W - 1);
  if (!(y > -1 && y < static_cast<T>(H) && x > -1 && x < static_cast<T>(W))) return false;
  free_y = y >= 0 && y <= hi_y;
  free_x = x >= 0 && x <= hi_x;
  const T yc = clamp_to(y, T(0), hi_y), xc = clamp_to(x, T(0), hi_x);
  // yc, xc >= 0: truncation is floor.
  const int64_t y0 = static_cast<int64_t>(yc), x0 = static_cast<int64_t>(xc);
  const int64_t y1 = y0 + 1 < H - 1 ? y0 + 1 : H - 1, x1 = x0 + 1 < W - 1 ? x0 + 1 : W - 1;
  ly = yc - static_cast<T>(y0);
  lx = xc - static_cast<T>(x0);
  idx[0] = static_cast<Index>(y0 * W + x0);
  idx[1] = static_cast<Index>(y0 * W + x1);
  idx[2] = static_cast<Index>(y1 * W + x0);
  idx[3] = static_cast<Index>(y1 * W + x1);
  return true;
}

// Rule 3, the official (deformable) PS-RoI pooling: a sample outside
// [-0.5, W-0.5] x [-0.5, H-0.5] is skipped (not counted); otherwise it is clamped to
// [0, W-1] x [0, H-1] and read between floor and ceil, so on an integer coordinate both
// neighbours are the same pixel. h_in / w_in say whether the clamp was inactive on that axis.
template <typename T>
struct PsroiSample {
  int64_t y0, y1, x0, x1;
  T ly, lx;
  bool h_in, w_in;
};

template <typename T>
DCN_HD bool psroi_sample(T h, T w, int64_t H, int64_t W, PsroiSample<T>& s) {
  if (!(w >= T(-0.5) && w <= static_cast<T>(W) - T(0.5) && h >= T(-0.5) &&
        h <= static_cast<T>(H) - T(0.5)))
    return false;
  s.w_in = w >= T(0) && w <= static_cast<T>(W - 1);
  s.h_in = h >= T(0) && h <= static_cast<T>(H - 1);
  w = clamp_to(w, T(0), static_cast<T>(W - 1));
  h = clamp_to(h, T(0), static_cast<T>(H - 1));
  // h, w >= 0: truncation is floor, and "+1 unless integral" is ceil (no libm call).
  s.y0 = static_cast<int64_t>(h);
  s.x0 = static_cast<int64_t>(w);
  s.ly = h - static_cast<T>(s.y0);
  s.lx = w - static_cast<T>(s.x0);
  s.y1 = s.y0 + (s.ly > T(0) ? 1 : 0);
  s.x1 = s.x0 + (s.lx > T(0) ? 1 : 0);
  return true;
}

// Rule 4, RoIAlign (as torchvision): a sample outside [-1, H] x [-1, W] contributes nothing
// (returns false); otherwise y, x are clamped to >= 0 and the high neighbour to the last
// row/column (at or past it, both neighbours are the last one, with weight 1 on it).
template <typename T, typename Index>
DCN_HD bool roi_align_sample(T y, T x, int64_t H, int64_t W, Index idx[4], T w[4]) {
  if (!(y >= T(-1) && y <= static_cast<T>(H) && x >= T(-1) && x <= static_cast<T>(W)))
    return false;
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int64_t y0 = static_cast<int64_t>(y), x0 = static_cast<int64_t>(x), y1, x1;
  if (y0 >= H - 1) {
    y1 = y0 = H - 1;
    y = static_cast<T>(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= W - 1) {
    x1 = x0 = W - 1;
    x = static_cast<T>(x0);
  } else {
    x1 = x0 + 1;
  }
  corner_weights(y - static_cast<T>(y0), x - static_cast<T>(x0), w);
  idx[0] = static_cast<Index>(y0 * W + x0);
  idx[1] = static_cast<Index>(y0 * W + x1);
  idx[2] = static_cast<Index>(y1 * W + x0);
  idx[3] = static_cast<Index>(y1 * W + x1);
  return true;
}

}  // namespace bilinear
}  // namespace dcn_det
