// Greedy non-maximum suppression on CPU (docs/DESIGN.md section 4.3).
//
// Boxes are visited in decreasing score order (ties: lower index first). A box is kept unless
// a kept box overlaps it with IoU > iou_threshold, IoU being computed on continuous XYXY boxes
// with area (x2-x1)*(y2-y1). A zero-area pair has IoU 0/0 = NaN, which never suppresses.
//
// _batched_nms is the same greedy NMS run separately on the boxes of each category (idxs): its
// cost is the sum over categories of n_c^2 instead of N^2, which is what the class-offset trick
// (one nms over all boxes, each category shifted to its own region) costs on the CPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/op_checks.h"

namespace dcn_det {
namespace {

// Score-ordered box coordinates (x1, y1, x2, y2, area as separate arrays, so that the inner
// loop reads each with unit stride) and suppression flags.
template <typename T>
struct SortedBoxes {
  std::vector<T> x1, y1, x2, y2, area;
  // 0 or 1, of the coordinates' type: GCC vectorises the inner loop only when the comparison
  // result stays in a floating vector (with byte flags the float64 loop ran scalar, ~10x
  // slower than the float32 one).
  std::vector<T> suppressed;

  // `b` holds n boxes (4 values each) in visiting order.
  SortedBoxes(const T* b, int64_t n)
      : x1(n), y1(n), x2(n), y2(n), area(n), suppressed(n, T(0)) {
    for (int64_t i = 0; i < n; ++i) {
      x1[i] = b[4 * i];
      y1[i] = b[4 * i + 1];
      x2[i] = b[4 * i + 2];
      y2[i] = b[4 * i + 3];
      area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
    }
  }

  // Greedy NMS over the boxes [begin, end) of the visiting order; calls on_keep(i) for each
  // kept box, in order.
  template <typename OnKeep>
  void greedy(int64_t begin, int64_t end, T thresh, OnKeep&& on_keep) {
    const T* __restrict__ px1 = x1.data();
    const T* __restrict__ py1 = y1.data();
    const T* __restrict__ px2 = x2.data();
    const T* __restrict__ py2 = y2.data();
    const T* __restrict__ parea = area.data();
    T* __restrict__ sup = suppressed.data();
    for (int64_t i = begin; i < end; ++i) {
      if (sup[i] != T(0)) continue;  // the early skip: a suppressed box suppresses nothing
      on_keep(i);
      const T ix1 = px1[i], iy1 = py1[i], ix2 = px2[i], iy2 = py2[i], iarea = parea[i];
      // Branch-free so that it vectorises: testing an already suppressed box again changes
      // nothing, and is cheaper than the mispredicted branch that would skip it.
      for (int64_t j = i + 1; j < end; ++j) {
        const T w = std::max(T(0), std::min(ix2, px2[j]) - std::max(ix1, px1[j]));
        const T h = std::max(T(0), std::min(iy2, py2[j]) - std::max(iy1, py1[j]));
        const T inter = w * h;
        const T iou = inter / (iarea + parea[j] - inter);
        sup[j] = std::max(sup[j], iou > thresh ? T(1) : T(0));
      }
    }
  }
};

template <typename T>
at::Tensor nms_kernel(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = boxes.size(0);
  // Stable, so that equal scores keep their input order and the result is deterministic.
  const at::Tensor order =
      std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  // Gathering the boxes in score order makes the inner loop walk memory forwards.
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const int64_t* ord = order.data_ptr<int64_t>();
  SortedBoxes<T> sb(sorted.data_ptr<T>(), n);
  std::vector<int64_t> keep;
  keep.reserve(n);
  sb.greedy(0, n, static_cast<T>(iou_threshold), [&](int64_t i) { keep.push_back(ord[i]); });
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())},
                             boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

// True when a box of score a is visited before one of score b: decreasing score, NaN first
// (at::sort's order: NaN above +inf), ties by lower index.
inline bool visited_before(double a, int64_t ia, double b, int64_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

// Per-category NMS. Boxes are visited in the same order as nms (decreasing score, ties by lower
// index) and the kept indices are returned in that order, so the result equals the
// class-offset nms of dcn_det/ops/nms.py whenever the float64 shift there is exact (it is for
// float32/float16 boxes of ordinary magnitudes): IoU is computed in float64 here as there.
// Single-threaded throughout (std::sort, plain loops; no ATen op that may start the thread
// pool): the whole kernel is a few ms, and a pool barrier on a loaded machine cost more.
at::Tensor batched_nms_cpu(const at::Tensor& boxes_, const at::Tensor& scores_,
                           const at::Tensor& idxs_, double iou_threshold) {
  checks::batched_nms(boxes_, scores_, idxs_);
  const int64_t n = boxes_.size(0);
  if (n == 0) return at::empty({0}, boxes_.options().dtype(at::kLong));
  const at::Tensor boxes = boxes_.contiguous(), scores = scores_.contiguous();
  const at::Tensor idxs = idxs_.to(at::kLong).contiguous();
  const int64_t* cls = idxs.data_ptr<int64_t>();

  // Scores and boxes as float64 (exact for every floating input dtype).
  std::vector<double> sc(n), box(4 * n);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "_batched_nms",
                                  [&] {
    const scalar_t* p = scores.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) sc[i] = static_cast<double>(p[i]);
  });
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "_batched_nms",
                                  [&] {
    const scalar_t* p = boxes.data_ptr<scalar_t>();
    for (int64_t i = 0; i < 4 * n; ++i) box[i] = static_cast<double>(p[i]);
  });

  // Grouped order: by category, then in visiting order inside each category.
  std::vector<int64_t> grouped(n);
  for (int64_t i = 0; i < n; ++i) grouped[i] = i;
  std::sort(grouped.begin(), grouped.end(), [&](int64_t a, int64_t b) {
    if (cls[a] != cls[b]) return cls[a] < cls[b];
    return visited_before(sc[a], a, sc[b], b);
  });
  std::vector<double> gathered(4 * n);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 4; ++k) gathered[4 * i + k] = box[4 * grouped[i] + k];
  SortedBoxes<double> sb(gathered.data(), n);

  // Greedy NMS on each category's run [begin, end) of the grouped order.
  std::vector<int64_t> keep;
  keep.reserve(n);
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin + 1;
    while (end < n && cls[grouped[end]] == cls[grouped[begin]]) ++end;
    sb.greedy(begin, end, iou_threshold, [&](int64_t i) { keep.push_back(grouped[i]); });
    begin = end;
  }
  // All kept boxes in visiting order.
  std::sort(keep.begin(), keep.end(),
            [&](int64_t a, int64_t b) { return visited_before(sc[a], a, sc[b], b); });
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())},
                             boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  checks::nms(boxes, scores);
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    out = nms_kernel<scalar_t>(boxes, scores, iou_threshold);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("_batched_nms", &batched_nms_cpu);
}

}  // namespace dcn_det
