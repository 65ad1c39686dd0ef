// CUDA kernels of dcn_det::deform_conv2d (v1 and modulated v2) and its backward.
//
// Scheme (per chunk of B images): deformable im2col into columns (C_in*K, B*HWo) in the input
// dtype, then one batched GEMM per conv group through ATen (tensor cores for half/bf16).
// Bilinear weights are computed in the acc type (float32; float64 for double). Backward:
// grad_columns = W^T @ grad_out; col2im scatters into an acc-type grad_input with atomics
// (the only non-deterministic part, so
// it alerts under torch.use_deterministic_algorithms); grad_offset/grad_mask are reduced over
// the channels of each offset group by one thread per (b, g, tap, position), deterministically;
// grad_weight = grad_out @ columns^T. Semantics: docs/DESIGN.md section 4.1.
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
// Upper bound on the elements of one columns buffer; larger batches are processed in chunks.
constexpr int64_t kMaxColumnElems = int64_t(1) << 27;

inline int64_t blocks_for(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 30);
}

struct ConvGeom {
  int64_t C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, G;  // G = offset groups
};

// Value of plane[(y, x)] with bilinear interpolation; a neighbour outside the plane counts 0.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t bilinear(const scalar_t* plane, int64_t H, int64_t W, acc_t y,
                                          acc_t x) {
  if (y <= -1 || y >= H || x <= -1 || x >= W) return acc_t(0);
  const int64_t y0 = static_cast<int64_t>(floor(y)), x0 = static_cast<int64_t>(floor(x));
  const acc_t ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
  acc_t v = 0;
  if (y0 >= 0 && x0 >= 0) v += hy * hx * static_cast<acc_t>(plane[y0 * W + x0]);
  if (y0 >= 0 && x0 + 1 < W) v += hy * lx * static_cast<acc_t>(plane[y0 * W + x0 + 1]);
  if (y0 + 1 < H && x0 >= 0) v += ly * hx * static_cast<acc_t>(plane[(y0 + 1) * W + x0]);
  if (y0 + 1 < H && x0 + 1 < W) v += ly * lx * static_cast<acc_t>(plane[(y0 + 1) * W + x0 + 1]);
  return v;
}

// columns[(c*K + k), b*HWo + p] = mask * bilinear(input[b, c], sample point of tap k at p).
template <typename scalar_t>
__global__ void im2col_kernel(int64_t n, const scalar_t* __restrict__ input,
                              const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                              ConvGeom g, int64_t B, scalar_t* __restrict__ columns) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t HWo = g.Ho * g.Wo, K = g.kh * g.kw, cpg = g.C / g.G;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t p = idx % HWo, b = (idx / HWo) % B, c = idx / (HWo * B);
    const int64_t oy = p / g.Wo, ox = p % g.Wo, og = c / cpg;
    const scalar_t* plane = input + (b * g.C + c) * g.H * g.W;
    const scalar_t* off = offset + ((b * g.G + og) * 2 * K) * HWo + p;
    const scalar_t* msk = mask ? mask + ((b * g.G + og) * K) * HWo + p : nullptr;
    scalar_t* col = columns + (c * K) * B * HWo + b * HWo + p;
    for (int64_t i = 0; i < g.kh; ++i) {
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t k = i * g.kw + j;
        const acc_t y = oy * g.sh - g.ph + i * g.dh + static_cast<acc_t>(off[(2 * k) * HWo]);
        const acc_t x = ox * g.sw - g.pw + j * g.dw + static_cast<acc_t>(off[(2 * k + 1) * HWo]);
        acc_t v = bilinear<scalar_t, acc_t>(plane, g.H, g.W, y, x);
        if (msk) v *= static_cast<acc_t>(msk[k * HWo]);
        col[k * B * HWo] = static_cast<scalar_t>(v);
      }
    }
  }
}

// Scatters grad_columns back onto an acc-type (float32/float64) grad_input through the bilinear weights.
template <typename scalar_t, typename acc_t>
__global__ void col2im_kernel(int64_t n, const scalar_t* __restrict__ grad_col,
                              const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                              ConvGeom g, int64_t B, acc_t* __restrict__ grad_input) {
  const int64_t HWo = g.Ho * g.Wo, K = g.kh * g.kw, cpg = g.C / g.G;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(blockDim.x) * gridDim.x) {
    // idx enumerates (c, k, b, p) in the columns' own layout.
    const int64_t p = idx % HWo, b = (idx / HWo) % B, k = (idx / (HWo * B)) % K,
                  c = idx / (HWo * B * K);
    const int64_t oy = p / g.Wo, ox = p % g.Wo, og = c / cpg, i = k / g.kw, j = k % g.kw;
    const scalar_t* off = offset + ((b * g.G + og) * 2 * K + 2 * k) * HWo + p;
    const acc_t y = oy * g.sh - g.ph + i * g.dh + static_cast<acc_t>(off[0]);
    const acc_t x = ox * g.sw - g.pw + j * g.dw + static_cast<acc_t>(off[HWo]);
    if (y <= -1 || y >= g.H || x <= -1 || x >= g.W) continue;
    acc_t gv = static_cast<acc_t>(grad_col[idx]);
    if (mask) gv *= static_cast<acc_t>(mask[((b * g.G + og) * K + k) * HWo + p]);
    if (gv == acc_t(0)) continue;
    const int64_t y0 = static_cast<int64_t>(floor(y)), x0 = static_cast<int64_t>(floor(x));
    const acc_t ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
    acc_t* plane = grad_input + (b * g.C + c) * g.H * g.W;
    if (y0 >= 0 && x0 >= 0) gpuAtomicAdd(plane + y0 * g.W + x0, hy * hx * gv);
    if (y0 >= 0 && x0 + 1 < g.W) gpuAtomicAdd(plane + y0 * g.W + x0 + 1, hy * lx * gv);
    if (y0 + 1 < g.H && x0 >= 0) gpuAtomicAdd(plane + (y0 + 1) * g.W + x0, ly * hx * gv);
    if (y0 + 1 < g.H && x0 + 1 < g.W) gpuAtomicAdd(plane + (y0 + 1) * g.W + x0 + 1, ly * lx * gv);
  }
}

// Lanes that share one (b, offset group, tap, position) item in offset_grad_kernel.
constexpr int kLanes = 8;

// kLanes threads per (b, offset group, tap k, position p): each lane sums over every kLanes-th
// channel of the group, then the lanes reduce with warp shuffles, giving d loss / d(dy, dx)
// and d loss / d mask. No atomics, so deterministic. Splitting the channel loop across lanes
// matters when there are few items (batch 1, one offset group: 9*H*W items, hundreds of
// channels each). The corner indices and weights are computed once per item.
template <typename scalar_t>
__global__ void offset_grad_kernel(int64_t n, const scalar_t* __restrict__ grad_col,
                                   const scalar_t* __restrict__ input,
                                   const scalar_t* __restrict__ offset,
                                   const scalar_t* __restrict__ mask, ConvGeom g, int64_t B,
                                   scalar_t* __restrict__ grad_offset,
                                   scalar_t* __restrict__ grad_mask) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t HWo = g.Ho * g.Wo, K = g.kh * g.kw, cpg = g.C / g.G, HW = g.H * g.W;
  // A multiple of 32 and a warp-multiple stride: every lane of a warp runs the same
  // iterations, as the shuffles require.
  const int64_t padded = (n * kLanes + 31) / 32 * 32;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < padded;
       t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t item = t / kLanes;
    const int lane = static_cast<int>(t % kLanes);
    const bool valid = item < n;
    const int64_t it = valid ? item : 0;
    const int64_t p = it % HWo, k = (it / HWo) % K, og = (it / (HWo * K)) % g.G,
                  b = it / (HWo * K * g.G);
    const int64_t oy = p / g.Wo, ox = p % g.Wo, i = k / g.kw, j = k % g.kw;
    const int64_t off_i = ((b * g.G + og) * 2 * K + 2 * k) * HWo + p;
    const acc_t y = oy * g.sh - g.ph + i * g.dh + static_cast<acc_t>(offset[off_i]);
    const acc_t x = ox * g.sw - g.pw + j * g.dw + static_cast<acc_t>(offset[off_i + HWo]);
    const int64_t mask_i = ((b * g.G + og) * K + k) * HWo + p;
    acc_t gy_sum = 0, gx_sum = 0, gm_sum = 0;
    if (valid && y > -1 && y < g.H && x > -1 && x < g.W) {
      const int64_t y0 = static_cast<int64_t>(floor(y)), x0 = static_cast<int64_t>(floor(x));
      const acc_t ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
      // corner offsets within a plane, -1 where the corner lies outside (contributes 0)
      const int64_t i00 = (y0 >= 0 && x0 >= 0) ? y0 * g.W + x0 : -1;
      const int64_t i01 = (y0 >= 0 && x0 + 1 < g.W) ? y0 * g.W + x0 + 1 : -1;
      const int64_t i10 = (y0 + 1 < g.H && x0 >= 0) ? (y0 + 1) * g.W + x0 : -1;
      const int64_t i11 = (y0 + 1 < g.H && x0 + 1 < g.W) ? (y0 + 1) * g.W + x0 + 1 : -1;
      for (int64_t c = og * cpg + lane; c < (og + 1) * cpg; c += kLanes) {
        const acc_t gc = static_cast<acc_t>(grad_col[(c * K + k) * B * HWo + b * HWo + p]);
        const scalar_t* plane = input + (b * g.C + c) * HW;
        const acc_t v00 = i00 >= 0 ? static_cast<acc_t>(plane[i00]) : acc_t(0);
        const acc_t v01 = i01 >= 0 ? static_cast<acc_t>(plane[i01]) : acc_t(0);
        const acc_t v10 = i10 >= 0 ? static_cast<acc_t>(plane[i10]) : acc_t(0);
        const acc_t v11 = i11 >= 0 ? static_cast<acc_t>(plane[i11]) : acc_t(0);
        gy_sum += gc * (hx * (v10 - v00) + lx * (v11 - v01));
        gx_sum += gc * (hy * (v01 - v00) + ly * (v11 - v10));
        if (mask) gm_sum += gc * (hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11);
      }
    }
    for (int delta = kLanes / 2; delta > 0; delta /= 2) {
      gy_sum += __shfl_down_sync(0xffffffffu, gy_sum, delta, kLanes);
      gx_sum += __shfl_down_sync(0xffffffffu, gx_sum, delta, kLanes);
      gm_sum += __shfl_down_sync(0xffffffffu, gm_sum, delta, kLanes);
    }
    if (valid && lane == 0) {
      const acc_t m = mask ? static_cast<acc_t>(mask[mask_i]) : acc_t(1);
      grad_offset[off_i] = static_cast<scalar_t>(gy_sum * m);
      grad_offset[off_i + HWo] = static_cast<scalar_t>(gx_sum * m);
      if (mask) grad_mask[mask_i] = static_cast<scalar_t>(gm_sum);
    }
  }
}

ConvGeom make_geom(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  ConvGeom g;
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw; g.dh = dh; g.dw = dw;
  g.Ho = (g.H + 2 * ph - dh * (g.kh - 1) - 1) / sh + 1;
  g.Wo = (g.W + 2 * pw - dw * (g.kw - 1) - 1) / sw + 1;
  g.G = offset.size(1) / (2 * g.kh * g.kw);
  return g;
}

void check_args(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                const std::optional<at::Tensor>& mask, const ConvGeom& g, int64_t groups) {
  TORCH_CHECK(input.dim() == 4, "deform_conv2d: input must be (N, C_in, H, W), got ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be (C_out, C_in/groups, kh, kw), got ",
              weight.sizes());
  TORCH_CHECK(offset.dim() == 4 && offset.size(1) % (2 * g.kh * g.kw) == 0 && g.G > 0 &&
                  g.C % g.G == 0 && offset.size(0) == input.size(0) && offset.size(2) == g.Ho &&
                  offset.size(3) == g.Wo,
              "deform_conv2d: offset must be (N, 2*G*kh*kw, H_out, W_out) = (", input.size(0),
              ", 2*G*", g.kh * g.kw, ", ", g.Ho, ", ", g.Wo, ") with C_in % G == 0, got ",
              offset.sizes());
  TORCH_CHECK(groups > 0 && g.C % groups == 0 && weight.size(0) % groups == 0,
              "deform_conv2d: C_in=", g.C, " and C_out=", weight.size(0),
              " must be divisible by groups=", groups);
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->dim() == 4 && mask->size(0) == input.size(0) &&
                    mask->size(1) == g.G * g.kh * g.kw && mask->size(2) == g.Ho &&
                    mask->size(3) == g.Wo,
                "deform_conv2d: mask must be (N, G*kh*kw, H_out, W_out) = (", input.size(0), ", ",
                g.G * g.kh * g.kw, ", ", g.Ho, ", ", g.Wo, "), got ", mask->sizes());
  }
}

int64_t chunk_for(const ConvGeom& g, int64_t N) {
  const int64_t per_image = std::max<int64_t>(1, g.C * g.kh * g.kw * g.Ho * g.Wo);
  return std::max<int64_t>(1, std::min<int64_t>(N, kMaxColumnElems / per_image));
}

at::Tensor im2col(const at::Tensor& in, const at::Tensor& off, const at::Tensor& msk,
                  const ConvGeom& g, int64_t B) {
  auto columns = at::empty({g.C * g.kh * g.kw, B * g.Ho * g.Wo}, in.options());
  const int64_t n = g.C * B * g.Ho * g.Wo;
  if (n == 0) return columns;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "dcn_im2col", [&] {
    im2col_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, in.data_ptr<scalar_t>(), off.data_ptr<scalar_t>(),
        msk.defined() ? msk.data_ptr<scalar_t>() : nullptr, g, B, columns.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return columns;
}

at::Tensor deform_conv2d_forward_cuda(const at::Tensor& input_, const at::Tensor& weight_,
                                      const at::Tensor& offset_,
                                      const std::optional<at::Tensor>& mask_,
                                      const std::optional<at::Tensor>& bias_, int64_t sh,
                                      int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                                      int64_t groups, int64_t offset_groups) {
  at::cuda::CUDAGuard guard(input_.device());
  const ConvGeom g = make_geom(input_, weight_, offset_, sh, sw, ph, pw, dh, dw);
  check_args(input_, weight_, offset_, mask_, g, groups);
  TORCH_CHECK(g.G == offset_groups, "deform_conv2d: offset_groups=", offset_groups,
              " does not match offset.size(1)=", offset_.size(1));
  auto input = input_.contiguous(), weight = weight_.contiguous(), offset = offset_.contiguous();
  at::Tensor mask = (mask_.has_value() && mask_->defined()) ? mask_->contiguous() : at::Tensor();
  const int64_t N = input.size(0), Cout = weight.size(0), HWo = g.Ho * g.Wo;
  auto output = at::empty({N, Cout, g.Ho, g.Wo}, input.options());
  if (N == 0 || HWo == 0) return output;
  const int64_t chunk = chunk_for(g, N);
  auto w = weight.view({groups, Cout / groups, -1});
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t B = std::min(chunk, N - n0);
    auto cols = im2col(input.narrow(0, n0, B), offset.narrow(0, n0, B),
                       mask.defined() ? mask.narrow(0, n0, B) : mask, g, B);
    auto out = at::bmm(w, cols.view({groups, -1, B * HWo}));  // (groups, Cout/groups, B*HWo)
    output.narrow(0, n0, B).copy_(out.view({Cout, B, g.Ho, g.Wo}).transpose(0, 1));
  }
  if (bias_.has_value() && bias_->defined()) output.add_(bias_->view({1, Cout, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
deform_conv2d_backward_cuda(const at::Tensor& grad_out_, const at::Tensor& input_,
                            const at::Tensor& weight_, const at::Tensor& offset_,
                            const std::optional<at::Tensor>& mask_,
                            const std::optional<at::Tensor>& bias_, int64_t sh, int64_t sw,
                            int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,
                            int64_t offset_groups) {
  at::cuda::CUDAGuard guard(input_.device());
  const ConvGeom g = make_geom(input_, weight_, offset_, sh, sw, ph, pw, dh, dw);
  check_args(input_, weight_, offset_, mask_, g, groups);
  TORCH_CHECK(g.G == offset_groups, "deform_conv2d: offset_groups mismatch");
  at::globalContext().alertNotDeterministic("dcn_det::_deform_conv2d_backward (CUDA, grad_input)");
  auto input = input_.contiguous(), weight = weight_.contiguous(), offset = offset_.contiguous();
  auto grad_out = grad_out_.contiguous();
  const bool has_mask = mask_.has_value() && mask_->defined();
  at::Tensor mask = has_mask ? mask_->contiguous() : at::Tensor();
  const int64_t N = input.size(0), Cout = weight.size(0), HWo = g.Ho * g.Wo, K = g.kh * g.kw;
  const auto acc_dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_input = at::zeros(input.sizes(), input.options().dtype(acc_dtype));
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = has_mask ? at::zeros_like(mask) : at::empty({0}, input.options());
  auto grad_weight = at::zeros_like(weight);
  at::Tensor grad_bias = (bias_.has_value() && bias_->defined())
                             ? grad_out.sum({0, 2, 3}).to(bias_->scalar_type())
                             : at::empty({0}, input.options());
  if (N == 0 || HWo == 0) return {grad_input.to(input.scalar_type()), grad_weight, grad_offset,
                                  grad_mask, grad_bias};
  auto stream = at::cuda::getCurrentCUDAStream();
  auto w = weight.view({groups, Cout / groups, -1});
  auto gw = grad_weight.view({groups, Cout / groups, -1});
  const int64_t chunk = chunk_for(g, N);
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t B = std::min(chunk, N - n0);
    auto in_c = input.narrow(0, n0, B), off_c = offset.narrow(0, n0, B);
    auto msk_c = has_mask ? mask.narrow(0, n0, B) : mask;
    // grad_out chunk as (groups, Cout/groups, B*HWo).
    auto go = grad_out.narrow(0, n0, B).transpose(0, 1).reshape({groups, Cout / groups, B * HWo});
    auto grad_cols = at::bmm(w.transpose(1, 2), go);  // (groups, Cin/groups*K, B*HWo)
    const int64_t n_col = g.C * K * B * HWo;
    const int64_t n_off = B * g.G * K * HWo;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcn_bwd", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      col2im_kernel<scalar_t, acc_t><<<blocks_for(n_col), kThreads, 0, stream>>>(
          n_col, grad_cols.data_ptr<scalar_t>(), off_c.data_ptr<scalar_t>(),
          has_mask ? msk_c.data_ptr<scalar_t>() : nullptr, g, B,
          grad_input.narrow(0, n0, B).data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      offset_grad_kernel<scalar_t><<<blocks_for(n_off * kLanes), kThreads, 0, stream>>>(
          n_off, grad_cols.data_ptr<scalar_t>(), in_c.data_ptr<scalar_t>(),
          off_c.data_ptr<scalar_t>(), has_mask ? msk_c.data_ptr<scalar_t>() : nullptr, g, B,
          grad_offset.narrow(0, n0, B).data_ptr<scalar_t>(),
          has_mask ? grad_mask.narrow(0, n0, B).data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    auto cols = im2col(in_c, off_c, msk_c, g, B).view({groups, -1, B * HWo});
    gw.baddbmm_(go, cols.transpose(1, 2));
  }
  return {grad_input.to(input.scalar_type()), grad_weight, grad_offset, grad_mask, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(dcn_det, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_forward_cuda);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace dcn_det
