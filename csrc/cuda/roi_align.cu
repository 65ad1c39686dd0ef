// CUDA kernels of dcn_det::roi_align (torchvision semantics) and its backward.
// One thread per output element (r, c, ph, pw). The backward scatters with acc-type atomics,
// so it alerts under torch.use_deterministic_algorithms.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Context.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace dcn_det {
namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 30);
}

struct AlignGeom {
  int64_t C, H, W, PH, PW, sampling;
  double scale;
  bool aligned;
};

// The bilinear corners and weights of one sample; valid == false means it contributes zero.
template <typename acc_t>
struct Corners {
  bool valid;
  int64_t y0, x0, y1, x1;
  acc_t w00, w01, w10, w11;
};

template <typename acc_t>
__device__ __forceinline__ Corners<acc_t> corners(int64_t H, int64_t W, acc_t y, acc_t x) {
  Corners<acc_t> c{};
  if (y < -1 || y > H || x < -1 || x > W) {
    c.valid = false;
    return c;
  }
  c.valid = true;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  c.y0 = static_cast<int64_t>(y);
  c.x0 = static_cast<int64_t>(x);
  if (c.y0 >= H - 1) {
    c.y0 = c.y1 = H - 1;
    y = static_cast<acc_t>(c.y0);
  } else {
    c.y1 = c.y0 + 1;
  }
  if (c.x0 >= W - 1) {
    c.x0 = c.x1 = W - 1;
    x = static_cast<acc_t>(c.x0);
  } else {
    c.x1 = c.x0 + 1;
  }
  const acc_t ly = y - c.y0, lx = x - c.x0, hy = 1 - ly, hx = 1 - lx;
  c.w00 = hy * hx;
  c.w01 = hy * lx;
  c.w10 = ly * hx;
  c.w11 = ly * lx;
  return c;
}

// Sample grid of one RoI bin: start, bin size and grid counts.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void roi_frame(const scalar_t* roi, const AlignGeom& g, acc_t& sy,
                                          acc_t& sx, acc_t& bh, acc_t& bw, int64_t& gh,
                                          int64_t& gw) {
  const acc_t off = g.aligned ? acc_t(0.5) : acc_t(0);
  const acc_t scale = static_cast<acc_t>(g.scale);
  sx = static_cast<acc_t>(roi[1]) * scale - off;
  sy = static_cast<acc_t>(roi[2]) * scale - off;
  acc_t rw = static_cast<acc_t>(roi[3]) * scale - off - sx;
  acc_t rh = static_cast<acc_t>(roi[4]) * scale - off - sy;
  if (!g.aligned) {
    rw = rw > acc_t(1) ? rw : acc_t(1);
    rh = rh > acc_t(1) ? rh : acc_t(1);
  }
  bh = rh / g.PH;
  bw = rw / g.PW;
  gh = g.sampling > 0 ? g.sampling : static_cast<int64_t>(ceil(rh / g.PH));
  gw = g.sampling > 0 ? g.sampling : static_cast<int64_t>(ceil(rw / g.PW));
}

template <typename scalar_t>
__global__ void roi_align_forward_kernel(int64_t n, const scalar_t* __restrict__ input,
                                         const scalar_t* __restrict__ rois, AlignGeom g,
                                         scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t pw = idx % g.PW, ph = (idx / g.PW) % g.PH, c = (idx / (g.PW * g.PH)) % g.C,
                  r = idx / (g.PW * g.PH * g.C);
    const scalar_t* roi = rois + r * 5;
    const int64_t b = static_cast<int64_t>(roi[0]);
    acc_t sy, sx, bh, bw;
    int64_t gh, gw;
    roi_frame<scalar_t, acc_t>(roi, g, sy, sx, bh, bw, gh, gw);
    const scalar_t* plane = input + (b * g.C + c) * g.H * g.W;
    acc_t sum = 0;
    for (int64_t iy = 0; iy < gh; ++iy) {
      const acc_t y = sy + ph * bh + (iy + acc_t(0.5)) * bh / gh;
      for (int64_t ix = 0; ix < gw; ++ix) {
        const acc_t x = sx + pw * bw + (ix + acc_t(0.5)) * bw / gw;
        const Corners<acc_t> k = corners<acc_t>(g.H, g.W, y, x);
        if (!k.valid) continue;
        sum += k.w00 * static_cast<acc_t>(plane[k.y0 * g.W + k.x0]) +
               k.w01 * static_cast<acc_t>(plane[k.y0 * g.W + k.x1]) +
               k.w10 * static_cast<acc_t>(plane[k.y1 * g.W + k.x0]) +
               k.w11 * static_cast<acc_t>(plane[k.y1 * g.W + k.x1]);
      }
    }
    const int64_t count = gh * gw > 1 ? gh * gw : 1;
    out[idx] = static_cast<scalar_t>(sum / count);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void roi_align_backward_kernel(int64_t n, const scalar_t* __restrict__ grad,
                                          const scalar_t* __restrict__ rois, AlignGeom g,
                                          acc_t* __restrict__ grad_input) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t pw = idx % g.PW, ph = (idx / g.PW) % g.PH, c = (idx / (g.PW * g.PH)) % g.C,
                  r = idx / (g.PW * g.PH * g.C);
    const scalar_t* roi = rois + r * 5;
    const int64_t b = static_cast<int64_t>(roi[0]);
    acc_t sy, sx, bh, bw;
    int64_t gh, gw;
    roi_frame<scalar_t, acc_t>(roi, g, sy, sx, bh, bw, gh, gw);
    const int64_t count = gh * gw > 1 ? gh * gw : 1;
    const acc_t go = static_cast<acc_t>(grad[idx]) / count;
    acc_t* plane = grad_input + (b * g.C + c) * g.H * g.W;
    for (int64_t iy = 0; iy < gh; ++iy) {
      const acc_t y = sy + ph * bh + (iy + acc_t(0.5)) * bh / gh;
      for (int64_t ix = 0; ix < gw; ++ix) {
        const acc_t x = sx + pw * bw + (ix + acc_t(0.5)) * bw / gw;
        const Corners<acc_t> k = corners<acc_t>(g.H, g.W, y, x);
        if (!k.valid) continue;
        gpuAtomicAdd(plane + k.y0 * g.W + k.x0, k.w00 * go);
        gpuAtomicAdd(plane + k.y0 * g.W + k.x1, k.w01 * go);
        gpuAtomicAdd(plane + k.y1 * g.W + k.x0, k.w10 * go);
        gpuAtomicAdd(plane + k.y1 * g.W + k.x1, k.w11 * go);
      }
    }
  }
}

void check_rois(const at::Tensor& rois, int64_t batch) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be (R, 5), got ",
              rois.sizes());
  if (rois.size(0) > 0) {
    auto b = rois.select(1, 0);
    TORCH_CHECK(b.min().item<double>() >= 0 && b.max().item<double>() < batch,
                "roi_align: rois[:, 0] (batch index) must be in [0, ", batch, ")");
  }
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input_, const at::Tensor& rois_,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  at::cuda::CUDAGuard guard(input_.device());
  TORCH_CHECK(input_.dim() == 4, "roi_align: input must be (N, C, H, W), got ", input_.sizes());
  check_rois(rois_, input_.size(0));
  auto input = input_.contiguous(), rois = rois_.contiguous();
  AlignGeom g{input.size(1), input.size(2), input.size(3), pooled_height, pooled_width,
              sampling_ratio, spatial_scale, aligned};
  auto out = at::zeros({rois.size(0), g.C, pooled_height, pooled_width}, input.options());
  const int64_t n = out.numel();
  if (n == 0 || g.H == 0 || g.W == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_fwd", [&] {
    roi_align_forward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad_, const at::Tensor& rois_,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  at::cuda::CUDAGuard guard(grad_.device());
  check_rois(rois_, batch_size);
  at::globalContext().alertNotDeterministic("dcn_det::_roi_align_backward (CUDA)");
  auto grad = grad_.contiguous(), rois = rois_.contiguous();
  AlignGeom g{channels, height, width, pooled_height, pooled_width, sampling_ratio, spatial_scale,
              aligned};
  const auto acc_dtype = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad.options().dtype(acc_dtype));
  const int64_t n = grad.numel();
  if (n > 0 && height > 0 && width > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_bwd", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      roi_align_backward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          n, grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), g, grad_input.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return grad_input.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace dcn_det
