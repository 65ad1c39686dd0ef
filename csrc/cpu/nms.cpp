// Greedy non-maximum suppression on CPU (../../../shared/DESIGN.md section 4.3).
//
// Boxes are visited in decreasing score order (ties: lower index first). A box is kept unless
// a kept box overlaps it with IoU > iou_threshold, IoU being computed on continuous XYXY boxes
// with area (x2-x1)*(y2-y1). A zero-area pair has IoU 0/0 = NaN, which never suppresses.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace dcn_det {
namespace {

template <typename T>
at::Tensor nms_kernel(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = boxes.size(0);
  // Stable, so that equal scores keep their input order and the result is deterministic.
  const at::Tensor order =
      std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  // Gathering the boxes in score order makes the inner loop walk memory forwards.
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const T* b = sorted.data_ptr<T>();
  const int64_t* ord = order.data_ptr<int64_t>();

  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t i = 0; i < n; ++i) {
    x1[i] = b[4 * i];
    y1[i] = b[4 * i + 1];
    x2[i] = b[4 * i + 2];
    y2[i] = b[4 * i + 3];
    area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
  }
  const T thresh = static_cast<T>(iou_threshold);
  std::vector<uint8_t> suppressed(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;  // the early skip: a suppressed box suppresses nothing
    keep.push_back(ord[i]);
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    // Branch-free so that it vectorises: testing an already suppressed box again changes
    // nothing, and is cheaper than the mispredicted branch that would skip it.
    uint8_t* sup = suppressed.data();
    for (int64_t j = i + 1; j < n; ++j) {
      const T w = std::max(T(0), std::min(ix2, x2[j]) - std::max(ix1, x1[j]));
      const T h = std::max(T(0), std::min(iy2, y2[j]) - std::max(iy1, y1[j]));
      const T inter = w * h;
      const T iou = inter / (iarea + area[j] - inter);
      sup[j] |= static_cast<uint8_t>(iou > thresh);
    }
  }
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())},
                             boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "nms: boxes must have shape (N, 4) XYXY, got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "nms: scores must have shape (N,) = (", boxes.size(0), ",), got ", scores.sizes());
  TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), "nms: scores has dtype ",
              scores.scalar_type(), " but boxes has dtype ", boxes.scalar_type());
  TORCH_CHECK(scores.device() == boxes.device(), "nms: scores is on ", scores.device(),
              " but boxes is on ", boxes.device());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    out = nms_kernel<scalar_t>(boxes, scores, iou_threshold);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CPU, m) { m.impl("nms", &nms_cpu); }

}  // namespace dcn_det
