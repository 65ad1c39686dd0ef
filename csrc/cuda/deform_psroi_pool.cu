// CUDA kernels of dcn_det::deform_psroi_pool (the official DeformablePSROIPooling operator)
// and its backward. One thread per output element (r, c, ph, pw); the sampling follows
// docs/DESIGN.md section 4.2 line by line. The backward scatters with acc-type (float32/float64) atomics into
// grad_input and grad_offset (shared by the bins of one part and the channels of one class), so
// it alerts under torch.use_deterministic_algorithms.
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

struct PoolGeom {
  int64_t C, H, W, output_dim, G, P, part, S, C_off;
  double scale, trans_std;
};

// C's round(): half away from zero.
template <typename acc_t>
__device__ __forceinline__ acc_t c_round(acc_t v) { return round(v); }

// Everything about one output element that the forward and backward both need.
template <typename acc_t>
struct Bin {
  int64_t batch, channel, part_h, part_w, cls;
  acc_t wstart, hstart, sub_w, sub_h, roi_w, roi_h;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ Bin<acc_t> make_bin(const scalar_t* rois, const scalar_t* offset,
                                        const PoolGeom& g, int64_t r, int64_t c, int64_t ph,
                                        int64_t pw) {
  Bin<acc_t> bn;
  const scalar_t* roi = rois + r * 5;
  bn.batch = static_cast<int64_t>(roi[0]);
  const acc_t x1 = c_round<acc_t>(static_cast<acc_t>(roi[1])) * static_cast<acc_t>(g.scale) - acc_t(0.5);
  const acc_t y1 = c_round<acc_t>(static_cast<acc_t>(roi[2])) * static_cast<acc_t>(g.scale) - acc_t(0.5);
  const acc_t x2 = (c_round<acc_t>(static_cast<acc_t>(roi[3])) + 1) * static_cast<acc_t>(g.scale) - acc_t(0.5);
  const acc_t y2 = (c_round<acc_t>(static_cast<acc_t>(roi[4])) + 1) * static_cast<acc_t>(g.scale) - acc_t(0.5);
  bn.roi_w = fmax(x2 - x1, acc_t(0.1));
  bn.roi_h = fmax(y2 - y1, acc_t(0.1));
  const acc_t bin_w = bn.roi_w / g.P, bin_h = bn.roi_h / g.P;
  bn.sub_w = bin_w / g.S;
  bn.sub_h = bin_h / g.S;
  bn.part_h = ph * g.part / g.P;
  bn.part_w = pw * g.part / g.P;
  bn.cls = c / (g.output_dim / g.C_off);
  acc_t tx = 0, ty = 0;
  if (offset) {
    const int64_t base = ((r * 2 * g.C_off + 2 * bn.cls) * g.part + bn.part_h) * g.part + bn.part_w;
    tx = static_cast<acc_t>(offset[base]) * static_cast<acc_t>(g.trans_std);
    ty = static_cast<acc_t>(offset[base + g.part * g.part]) * static_cast<acc_t>(g.trans_std);
  }
  bn.wstart = pw * bin_w + x1 + tx * bn.roi_w;
  bn.hstart = ph * bin_h + y1 + ty * bn.roi_h;
  const int64_t gw = min(pw * g.G / g.P, g.G - 1), gh = min(ph * g.G / g.P, g.G - 1);
  bn.channel = (c * g.G + gh) * g.G + gw;
  return bn;
}

template <typename scalar_t, typename acc_t>
__global__ void psroi_forward_kernel(int64_t n, const scalar_t* __restrict__ input,
                                     const scalar_t* __restrict__ rois,
                                     const scalar_t* __restrict__ offset, PoolGeom g,
                                     scalar_t* __restrict__ out, scalar_t* __restrict__ count) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t pw = idx % g.P, ph = (idx / g.P) % g.P, c = (idx / (g.P * g.P)) % g.output_dim,
                  r = idx / (g.P * g.P * g.output_dim);
    const Bin<acc_t> bn = make_bin<scalar_t, acc_t>(rois, offset, g, r, c, ph, pw);
    const scalar_t* plane = input + (bn.batch * g.C + bn.channel) * g.H * g.W;
    acc_t sum = 0;
    int cnt = 0;
    for (int64_t ih = 0; ih < g.S; ++ih) {
      for (int64_t iw = 0; iw < g.S; ++iw) {
        acc_t w = bn.wstart + iw * bn.sub_w, h = bn.hstart + ih * bn.sub_h;
        if (w < acc_t(-0.5) || w > g.W - acc_t(0.5) || h < acc_t(-0.5) || h > g.H - acc_t(0.5)) continue;
        w = fmin(fmax(w, acc_t(0)), g.W - acc_t(1));
        h = fmin(fmax(h, acc_t(0)), g.H - acc_t(1));
        const int64_t x0 = floor(w), x1 = ceil(w), y0 = floor(h), y1 = ceil(h);
        const acc_t dx = w - x0, dy = h - y0;
        sum += (1 - dx) * (1 - dy) * static_cast<acc_t>(plane[y0 * g.W + x0]) +
               dx * (1 - dy) * static_cast<acc_t>(plane[y0 * g.W + x1]) +
               (1 - dx) * dy * static_cast<acc_t>(plane[y1 * g.W + x0]) +
               dx * dy * static_cast<acc_t>(plane[y1 * g.W + x1]);
        ++cnt;
      }
    }
    out[idx] = static_cast<scalar_t>(cnt == 0 ? acc_t(0) : sum / cnt);
    count[idx] = static_cast<scalar_t>(cnt);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void psroi_backward_kernel(int64_t n, const scalar_t* __restrict__ grad_out,
                                      const scalar_t* __restrict__ input,
                                      const scalar_t* __restrict__ rois,
                                      const scalar_t* __restrict__ offset,
                                      const scalar_t* __restrict__ count, PoolGeom g,
                                      acc_t* __restrict__ grad_input,
                                      acc_t* __restrict__ grad_offset) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const acc_t cnt = static_cast<acc_t>(count[idx]);
    if (cnt <= acc_t(0)) continue;
    const acc_t go = static_cast<acc_t>(grad_out[idx]) / cnt;
    if (go == acc_t(0)) continue;
    const int64_t pw = idx % g.P, ph = (idx / g.P) % g.P, c = (idx / (g.P * g.P)) % g.output_dim,
                  r = idx / (g.P * g.P * g.output_dim);
    const Bin<acc_t> bn = make_bin<scalar_t, acc_t>(rois, offset, g, r, c, ph, pw);
    const int64_t plane_off = (bn.batch * g.C + bn.channel) * g.H * g.W;
    const scalar_t* plane = input + plane_off;
    acc_t* gplane = grad_input + plane_off;
    acc_t gtx = 0, gty = 0;
    for (int64_t ih = 0; ih < g.S; ++ih) {
      for (int64_t iw = 0; iw < g.S; ++iw) {
        acc_t w = bn.wstart + iw * bn.sub_w, h = bn.hstart + ih * bn.sub_h;
        if (w < acc_t(-0.5) || w > g.W - acc_t(0.5) || h < acc_t(-0.5) || h > g.H - acc_t(0.5)) continue;
        // A clamped coordinate does not move with the offset: its derivative is zero.
        const bool w_free = w > acc_t(0) && w < g.W - acc_t(1), h_free = h > acc_t(0) && h < g.H - acc_t(1);
        w = fmin(fmax(w, acc_t(0)), g.W - acc_t(1));
        h = fmin(fmax(h, acc_t(0)), g.H - acc_t(1));
        const int64_t x0 = floor(w), x1 = ceil(w), y0 = floor(h), y1 = ceil(h);
        const acc_t dx = w - x0, dy = h - y0;
        gpuAtomicAdd(gplane + y0 * g.W + x0, (1 - dx) * (1 - dy) * go);
        gpuAtomicAdd(gplane + y0 * g.W + x1, dx * (1 - dy) * go);
        gpuAtomicAdd(gplane + y1 * g.W + x0, (1 - dx) * dy * go);
        gpuAtomicAdd(gplane + y1 * g.W + x1, dx * dy * go);
        if (offset) {
          const acc_t v00 = plane[y0 * g.W + x0], v01 = plane[y0 * g.W + x1];
          const acc_t v10 = plane[y1 * g.W + x0], v11 = plane[y1 * g.W + x1];
          if (w_free) gtx += go * ((1 - dy) * (v01 - v00) + dy * (v11 - v10));
          if (h_free) gty += go * ((1 - dx) * (v10 - v00) + dx * (v11 - v01));
        }
      }
    }
    if (offset) {
      const int64_t base =
          ((r * 2 * g.C_off + 2 * bn.cls) * g.part + bn.part_h) * g.part + bn.part_w;
      gpuAtomicAdd(grad_offset + base, gtx * static_cast<acc_t>(g.trans_std) * bn.roi_w);
      gpuAtomicAdd(grad_offset + base + g.part * g.part, gty * static_cast<acc_t>(g.trans_std) * bn.roi_h);
    }
  }
}

PoolGeom make_geom(const at::Tensor& input, const std::optional<at::Tensor>& offset,
                   double scale, int64_t output_dim, int64_t group_size, int64_t pooled_size,
                   int64_t part_size, int64_t sample_per_part, double trans_std) {
  PoolGeom g;
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.output_dim = output_dim;
  g.G = group_size;
  g.P = pooled_size;
  g.part = part_size;
  g.S = sample_per_part;
  g.C_off = (offset.has_value() && offset->defined()) ? offset->size(1) / 2 : 1;
  g.scale = scale;
  g.trans_std = trans_std;
  return g;
}

void check_args(const at::Tensor& input, const at::Tensor& rois,
                const std::optional<at::Tensor>& offset, const PoolGeom& g) {
  TORCH_CHECK(input.dim() == 4 && g.C == g.output_dim * g.G * g.G,
              "deform_psroi_pool: input must be (N, output_dim*group_size^2=", g.output_dim * g.G * g.G,
              ", H, W), got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "deform_psroi_pool: rois must be (R, 5), got ", rois.sizes());
  TORCH_CHECK(g.P > 0 && g.G > 0 && g.part > 0 && g.S > 0,
              "deform_psroi_pool: pooled_size, group_size, part_size, sample_per_part must be > 0");
  if (offset.has_value() && offset->defined()) {
    TORCH_CHECK(offset->dim() == 4 && offset->size(0) == rois.size(0) && offset->size(1) % 2 == 0 &&
                    offset->size(1) > 0 && g.output_dim % g.C_off == 0 &&
                    offset->size(2) == g.part && offset->size(3) == g.part,
                "deform_psroi_pool: offset must be (R=", rois.size(0), ", 2*C_off, ", g.part, ", ",
                g.part, ") with output_dim % C_off == 0, got ", offset->sizes());
  }
  if (rois.size(0) > 0) {
    auto b = rois.select(1, 0);
    TORCH_CHECK(b.min().item<double>() >= 0 && b.max().item<double>() < input.size(0),
                "deform_psroi_pool: rois[:, 0] (batch index) must be in [0, ", input.size(0), ")");
  }
}

std::tuple<at::Tensor, at::Tensor> deform_psroi_pool_forward_cuda(
    const at::Tensor& input_, const at::Tensor& rois_, const std::optional<at::Tensor>& offset_,
    double spatial_scale, int64_t output_dim, int64_t group_size, int64_t pooled_size,
    int64_t part_size, int64_t sample_per_part, double trans_std) {
  at::cuda::CUDAGuard guard(input_.device());
  const PoolGeom g = make_geom(input_, offset_, spatial_scale, output_dim, group_size, pooled_size,
                               part_size, sample_per_part, trans_std);
  check_args(input_, rois_, offset_, g);
  auto input = input_.contiguous(), rois = rois_.contiguous();
  const bool has_off = offset_.has_value() && offset_->defined();
  at::Tensor offset = has_off ? offset_->contiguous() : at::Tensor();
  const int64_t R = rois.size(0);
  auto out = at::empty({R, output_dim, pooled_size, pooled_size}, input.options());
  auto count = at::empty_like(out);
  const int64_t n = out.numel();
  if (n == 0) return {out, count};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "psroi_fwd", [&] {
    psroi_forward_kernel<scalar_t, at::acc_type<scalar_t, true>><<<blocks_for(n), kThreads, 0, stream>>>(
        n, input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
        has_off ? offset.data_ptr<scalar_t>() : nullptr, g, out.data_ptr<scalar_t>(),
        count.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, count};
}

std::tuple<at::Tensor, at::Tensor> deform_psroi_pool_backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& rois_,
    const std::optional<at::Tensor>& offset_, const at::Tensor& count_, double spatial_scale,
    int64_t output_dim, int64_t group_size, int64_t pooled_size, int64_t part_size,
    int64_t sample_per_part, double trans_std) {
  at::cuda::CUDAGuard guard(input_.device());
  const PoolGeom g = make_geom(input_, offset_, spatial_scale, output_dim, group_size, pooled_size,
                               part_size, sample_per_part, trans_std);
  check_args(input_, rois_, offset_, g);
  at::globalContext().alertNotDeterministic("dcn_det::_deform_psroi_pool_backward (CUDA)");
  auto input = input_.contiguous(), rois = rois_.contiguous(), grad_out = grad_out_.contiguous();
  auto count = count_.to(input.scalar_type()).contiguous();
  const bool has_off = offset_.has_value() && offset_->defined();
  at::Tensor offset = has_off ? offset_->contiguous() : at::Tensor();
  const auto acc_dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_input = at::zeros(input.sizes(), input.options().dtype(acc_dtype));
  auto grad_offset = has_off ? at::zeros(offset.sizes(), input.options().dtype(acc_dtype))
                             : at::empty({0}, input.options().dtype(acc_dtype));
  const int64_t n = grad_out.numel();
  if (n > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "psroi_bwd", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      psroi_backward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          n, grad_out.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
          has_off ? offset.data_ptr<scalar_t>() : nullptr, count.data_ptr<scalar_t>(), g,
          grad_input.data_ptr<acc_t>(), has_off ? grad_offset.data_ptr<acc_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_input.to(input.scalar_type()), grad_offset.to(input.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CUDA, m) {
  m.impl("deform_psroi_pool", &deform_psroi_pool_forward_cuda);
  m.impl("_deform_psroi_pool_backward", &deform_psroi_pool_backward_cuda);
}

}  // namespace dcn_det
