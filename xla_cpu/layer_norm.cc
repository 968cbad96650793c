// Layer normalisation (Ba et al., 2016) for XLA:CPU in float32, forward and backward, as XLA FFI
// handlers. x, y, ∂x, ∂y: [T, H] (H a multiple of 16); γ, β: [H]; μ, ρ: [T].
//   μ = mean x,  ρ = 1 / √(mean (x − μ)² + ε),  x̂ = (x − μ) ρ,  y = γ x̂ + β;
//   ∂x = ρ (g − mean g − x̂ mean(g x̂)) with g = γ ∂y,  ∂γ = Σ_rows ∂y x̂,  ∂β = Σ_rows ∂y.
// Blocks of kRows rows are tasks on XLA's intra-op thread pool; each block's ∂γ, ∂β partial sums
// are added up in block order, so the result does not depend on the threads' timing.
#include <cmath>
#include <vector>

#include "kernels.h"

namespace {

using namespace retrax_cpu;

constexpr int64_t kRows = 64;

int64_t Blocks(int64_t rows) { return (rows + kRows - 1) / kRows; }

// x must be [T, H] with H a multiple of 16, and γ [H].
ffi::Error CheckShapes(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& gamma) {
  auto xd = x.dimensions(), gd = gamma.dimensions();
  if (xd.size() != 2 || xd[1] % kWidth != 0 || gd.size() != 1 || gd[0] != xd[1])
    return ffi::Error::InvalidArgument("layer norm: x must be [T, H] with H a multiple of 16, and the scale [H]");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gamma,
                   ffi::Buffer<ffi::F32> beta, float epsilon, ffi::ResultBuffer<ffi::F32> y,
                   ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> rstd) {
  if (ffi::Error error = CheckShapes(x, gamma); error.failure()) return error;
  const int64_t rows = x.dimensions()[0], h = x.dimensions()[1];
  const float *in = x.typed_data(), *g = gamma.typed_data(), *b = beta.typed_data();
  float *out = y->typed_data(), *mu = mean->typed_data(), *rho = rstd->typed_data();
  ParallelFor(pool, Blocks(rows), [&](int64_t block) {
    for (int64_t r = block * kRows; r < std::min(rows, (block + 1) * kRows); ++r) {
      const float* xr = in + r * h;
      Vec total{};
      for (int64_t j = 0; j < h; j += kWidth) total += Load(xr + j);
      const float m = Sum(total) / h;
      Vec squares{};
      for (int64_t j = 0; j < h; j += kWidth) {
        Vec d = Load(xr + j) - m;
        squares += d * d;
      }
      const float inverse = 1.0f / std::sqrt(Sum(squares) / h + epsilon);
      for (int64_t j = 0; j < h; j += kWidth) Store(out + r * h + j, (Load(xr + j) - m) * inverse * Load(g + j) + Load(b + j));
      mu[r] = m;
      rho[r] = inverse;
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gamma,
                    ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd, ffi::Buffer<ffi::F32> dy,
                    ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dgamma,
                    ffi::ResultBuffer<ffi::F32> dbeta) {
  if (ffi::Error error = CheckShapes(x, gamma); error.failure()) return error;
  const int64_t rows = x.dimensions()[0], h = x.dimensions()[1], blocks = Blocks(rows);
  const float *in = x.typed_data(), *g = gamma.typed_data(), *mu = mean.typed_data(), *rho = rstd.typed_data();
  const float* grad = dy.typed_data();
  float* out = dx->typed_data();
  std::vector<float> partial(blocks * 2 * h, 0.0f);  // per block: Σ ∂y x̂, then Σ ∂y
  ParallelFor(pool, blocks, [&](int64_t block) {
    float *pg = partial.data() + block * 2 * h, *pb = pg + h;
    for (int64_t r = block * kRows; r < std::min(rows, (block + 1) * kRows); ++r) {
      const float *xr = in + r * h, *dr = grad + r * h;
      const float m = mu[r], inverse = rho[r];
      Vec sum_g{}, sum_gx{};
      for (int64_t j = 0; j < h; j += kWidth) {
        Vec xhat = (Load(xr + j) - m) * inverse, d = Load(dr + j), gj = d * Load(g + j);
        sum_g += gj;
        sum_gx += gj * xhat;
        Store(pg + j, Load(pg + j) + d * xhat);
        Store(pb + j, Load(pb + j) + d);
      }
      const float a = Sum(sum_g) / h, c = Sum(sum_gx) / h;
      for (int64_t j = 0; j < h; j += kWidth) {
        Vec xhat = (Load(xr + j) - m) * inverse;
        Store(out + r * h + j, (Load(dr + j) * Load(g + j) - a - xhat * c) * inverse);
      }
    }
  });
  float *dg = dgamma->typed_data(), *db = dbeta->typed_data();
  for (int64_t j = 0; j < h; ++j) dg[j] = db[j] = 0.0f;
  for (int64_t block = 0; block < blocks; ++block) {
    const float *pg = partial.data() + block * 2 * h, *pb = pg + h;
    for (int64_t j = 0; j < h; j += kWidth) {
      Store(dg + j, Load(dg + j) + Load(pg + j));
      Store(db + j, Load(db + j) + Load(pb + j));
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RetraxLayerNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // γ
                                  .Arg<ffi::Buffer<ffi::F32>>()   // β
                                  .Attr<float>("epsilon")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // y
                                  .Ret<ffi::Buffer<ffi::F32>>()   // μ
                                  .Ret<ffi::Buffer<ffi::F32>>()); // ρ

XLA_FFI_DEFINE_HANDLER_SYMBOL(RetraxLayerNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // γ
                                  .Arg<ffi::Buffer<ffi::F32>>()   // μ
                                  .Arg<ffi::Buffer<ffi::F32>>()   // ρ
                                  .Arg<ffi::Buffer<ffi::F32>>()   // ∂y
                                  .Ret<ffi::Buffer<ffi::F32>>()   // ∂x
                                  .Ret<ffi::Buffer<ffi::F32>>()   // ∂γ
                                  .Ret<ffi::Buffer<ffi::F32>>()); // ∂β
