// CUDA kernel of dcn_det::nms. Boxes are sorted by score; a kernel computes, for every box i
// and every block of 64 later boxes, a bitmask of those whose IoU with i exceeds the threshold;
// the greedy pass over the masks runs on the host (it is sequential by nature and the masks
// are small: N*N/64 words).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace dcn_det {
namespace {

constexpr int kBlock = 64;  // boxes per mask word

template <typename T>
__device__ __forceinline__ bool iou_above(const T* a, const T* b, double threshold) {
  using acc_t = double;
  const acc_t left = max(acc_t(a[0]), acc_t(b[0])), right = min(acc_t(a[2]), acc_t(b[2]));
  const acc_t top = max(acc_t(a[1]), acc_t(b[1])), bottom = min(acc_t(a[3]), acc_t(b[3]));
  const acc_t w = max(right - left, acc_t(0)), h = max(bottom - top, acc_t(0));
  const acc_t inter = w * h;
  const acc_t area_a = (acc_t(a[2]) - acc_t(a[0])) * (acc_t(a[3]) - acc_t(a[1]));
  const acc_t area_b = (acc_t(b[2]) - acc_t(b[0])) * (acc_t(b[3]) - acc_t(b[1]));
  const acc_t uni = area_a + area_b - inter;
  return uni > 0 && inter / uni > threshold;
}

template <typename T>
__global__ void nms_mask_kernel(int64_t n, double threshold, const T* __restrict__ boxes,
                                uint64_t* __restrict__ mask) {
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;
  const int64_t rows = min(n - row_block * kBlock, int64_t(kBlock));
  const int64_t cols = min(n - col_block * kBlock, int64_t(kBlock));
  __shared__ T block_boxes[kBlock * 4];
  if (threadIdx.x < cols) {
    for (int d = 0; d < 4; ++d)
      block_boxes[threadIdx.x * 4 + d] = boxes[(col_block * kBlock + threadIdx.x) * 4 + d];
  }
  __syncthreads();
  if (threadIdx.x < rows) {
    const int64_t i = row_block * kBlock + threadIdx.x;
    const T* cur = boxes + i * 4;
    uint64_t bits = 0;
    const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
    for (int j = start; j < cols; ++j) {
      if (iou_above(cur, block_boxes + j * 4, threshold)) bits |= (uint64_t(1) << j);
    }
    const int64_t col_blocks = (n + kBlock - 1) / kBlock;
    mask[i * col_blocks + col_block] = bits;
  }
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be (N, 4), got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "nms: scores must be (N,) with N = boxes.size(0) = ", boxes.size(0), ", got ",
              scores.sizes());
  at::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto sorted = boxes.index_select(0, order).contiguous();
  const int64_t col_blocks = (n + kBlock - 1) / kBlock;
  auto mask = at::empty({n * col_blocks}, boxes.options().dtype(at::kLong));
  dim3 grid(col_blocks, col_blocks);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_mask", [&] {
    nms_mask_kernel<scalar_t><<<grid, kBlock, 0, stream>>>(
        n, iou_threshold, sorted.data_ptr<scalar_t>(),
        reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  auto mask_cpu = mask.cpu();
  const uint64_t* m = reinterpret_cast<const uint64_t*>(mask_cpu.data_ptr<int64_t>());
  std::vector<uint64_t> removed(col_blocks, 0);
  auto keep = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  int64_t* k = keep.data_ptr<int64_t>();
  int64_t num = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t blk = i / kBlock, bit = i % kBlock;
    if (removed[blk] & (uint64_t(1) << bit)) continue;
    k[num++] = i;
    const uint64_t* row = m + i * col_blocks;
    for (int64_t j = blk; j < col_blocks; ++j) removed[j] |= row[j];
  }
  return order.index_select(0, keep.narrow(0, 0, num).to(order.device()));
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CUDA, m) { m.impl("nms", &nms_cuda); }

}  // namespace dcn_det
