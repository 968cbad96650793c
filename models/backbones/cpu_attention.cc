// Fused scaled dot-product attention for XLA:CPU in float32, forward and backward
// (FlashAttention's recomputation, Dao et al. 2022), as XLA FFI handlers.
//
// q, k, v, o: [B, L, H, D] (the projections' own layout, so no transposes); mask: [B, Lq or 1, Lk];
// lse: [B, H, Lq]. Dropout (keep_scale > 0) draws retrax's mask itself (`retrax.models.dropout`):
// the element at row-major index c of [B, H, Lq, Lk] is kept iff its 16-bit uniform u ≥ threshold,
// u from h(c) = g(g(c ⊕ key₀) ⊕ key₁) (g Wellons' lowbias32), two per word when Lk is even.
//   s = scale q kᵀ over the unmasked keys (a row with none attends uniformly to every key),
//   p = exp(s − lse),  lse = log Σ_k exp s,  m = kept · keep_scale (1 without dropout),
//   o = (p ⊙ m) v;
//   ∂v = (p ⊙ m)ᵀ ∂o,  ∂s = p ⊙ (m ⊙ ∂o vᵀ − r),  r = rowsum(∂o ⊙ o),
//   ∂q = scale ∂s k,  ∂k = scale ∂sᵀ q.
// Each (batch, head) pair is one task on XLA's intra-op thread pool; within it, blocks of query
// rows stay in cache and every product runs through one register-tiled kernel.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_kernels.h"

namespace {

using namespace retrax_cpu;

constexpr int kQueryBlock = 64;

// exp(x) = 2ⁿ · e^f, n = round(x / ln 2), |f| ≤ ln 2 / 2, e^f by its degree-6 Taylor polynomial
// (relative error below 2e-7); 0 below −87.
inline Vec Exp(Vec x) {
  const Vec low = Splat(-87.0f);
  Vec clamped = x < low ? low : x;
  Vec n = clamped * 1.44269504088896341f + 12582912.0f;  // round to nearest via 1.5 · 2²³
  n -= 12582912.0f;
  Vec f = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  Vec p = Splat(1.0f / 720);
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < low ? Vec{} : p * scale;
}

// C[r, 16 j + t] (+)= Σ_k A[r · ar + k · ak] B[k · bk + 16 j + t], for r < R, j < NV.
template <int R, int NV>
void Tile(int K, const float* A, int64_t ar, int64_t ak, const float* B, int64_t bk, float* C,
          int64_t cr, bool add) {
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = add ? Load(C + r * cr + j * kWidth) : Vec{};
  for (int k = 0; k < K; ++k) {
    Vec b[NV];
    for (int j = 0; j < NV; ++j) {
      b[j] = Load(B + k * bk + j * kWidth);
#if defined(__x86_64__)
      asm("" : "+v"(b[j]));  // keep b in a register: one load per vector, not one per row
#endif
    }
    for (int r = 0; r < R; ++r) {
      Vec a = Splat(A[r * ar + k * ak]);
      for (int j = 0; j < NV; ++j) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) Store(C + r * cr + j * kWidth, acc[r][j]);
}

template <int R, int NV>
void Rows(int M, int K, const float* A, int64_t ar, int64_t ak, const float* B, int64_t bk,
          float* C, int64_t cr, bool add) {
  int m = 0;
  for (; m + R <= M; m += R) Tile<R, NV>(K, A + m * ar, ar, ak, B, bk, C + m * cr, cr, add);
  for (; m < M; ++m) Tile<1, NV>(K, A + m * ar, ar, ak, B, bk, C + m * cr, cr, add);
}

// C[M, N] (+)= A[M, K] B[K, N] with A strided (ar, ak), B rows bk apart, N a multiple of 16.
void MatMul(int M, int N, int K, const float* A, int64_t ar, int64_t ak, const float* B,
            int64_t bk, float* C, int64_t cr, bool add) {
  int n = 0;
  for (; n + 4 * kWidth <= N; n += 4 * kWidth) Rows<4, 4>(M, K, A, ar, ak, B + n, bk, C + n, cr, add);
  switch ((N - n) / kWidth) {
    case 3: Rows<4, 3>(M, K, A, ar, ak, B + n, bk, C + n, cr, add); break;
    case 2: Rows<8, 2>(M, K, A, ar, ak, B + n, bk, C + n, cr, add); break;
    case 1: Rows<8, 1>(M, K, A, ar, ak, B + n, bk, C + n, cr, add); break;
  }
}

int64_t RoundUp(int64_t n) { return (n + kWidth - 1) / kWidth * kWidth; }

struct Shape {
  int64_t batch, lq, lk, heads, dim, lkp, mask_rows;
  int64_t Row(int64_t b, int64_t i, int64_t h) const { return ((b * lq + i) * heads + h) * dim; }
  int64_t KeyRow(int64_t b, int64_t j, int64_t h) const { return ((b * lk + j) * heads + h) * dim; }
};

// Gathers one head's rows [L, D] (optionally scaled) and their transpose [D, Lp] (zero padded).
void Gather(const float* x, int64_t base, int64_t stride, int64_t rows, int64_t dim, float scale,
            float* out, float* out_t, int64_t lp) {
  if (out_t) std::fill(out_t, out_t + dim * lp, 0.0f);
  for (int64_t i = 0; i < rows; ++i) {
    const float* src = x + base + i * stride;
    for (int64_t d = 0; d < dim; ++d) {
      float value = src[d] * scale;
      if (out) out[i * dim + d] = value;
      if (out_t) out_t[d * lp + i] = value;
    }
  }
}

// The additive mask of one row: 0 for an unmasked key, −∞ for a masked or padding key; a row
// with no unmasked key gets 0 for every key (so its scores are replaced by 0, as below).
void MaskBias(const bool* mask, const Shape& sh, float* bias, bool* none) {
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  int64_t count = 0;
  for (int64_t j = 0; j < sh.lk; ++j) {
    bias[j] = mask[j] ? 0.0f : kNone;
    count += mask[j];
  }
  *none = count == 0;
  if (*none) std::fill(bias, bias + sh.lk, 0.0f);
  std::fill(bias + sh.lk, bias + sh.lkp, kNone);
}

// Turns a row's scores s[0, lkp) into p = exp(s + bias − lse) and returns lse; given lse, uses it.
float Softmax(float* s, const float* bias, bool none, const Shape& sh, const float* lse) {
  if (none) std::fill(s, s + sh.lk, 0.0f);
  Vec top = Splat(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < sh.lkp; j += kWidth) {
    Vec x = Load(s + j) + Load(bias + j);
    Store(s + j, x);
    top = top > x ? top : x;
  }
  float shift = lse ? *lse : top[0];
  if (!lse)
    for (int t = 1; t < kWidth; ++t) shift = std::max(shift, top[t]);
  Vec total{};
  for (int64_t j = 0; j < sh.lkp; j += kWidth) {
    Vec e = Exp(Load(s + j) - shift);
    Store(s + j, e);
    total += e;
  }
  if (lse) return shift;
  const float sum = Sum(total);
  Vec inverse = Splat(1.0f / sum);
  for (int64_t j = 0; j < sh.lkp; j += kWidth) Store(s + j, Load(s + j) * inverse);
  return shift + std::log(sum);
}

inline UVec LowBias32(UVec x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

struct Dropout {
  uint32_t key0, key1, threshold;
  float scale;  // 1 / (1 − p); 0 without dropout

  // The multiplier m (scale where kept, else 0) of the elements [row · lk, row · lk + lk).
  void Row(uint32_t row, int64_t lk, float* m) const {
    const UVec lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const Vec kept = Splat(scale);
    if (lk % 2 == 0) {  // word w gives element 2w its low half, element 2w + 1 its high half
      const uint32_t first = row * uint32_t(lk / 2);
      for (int64_t j = 0; j < lk; j += 2 * kWidth) {
        UVec h = LowBias32(LowBias32((first + uint32_t(j / 2) + lanes) ^ key0) ^ key1);
        UVec low = h & 0xFFFFu, high = h >> 16;
        UVec head = __builtin_shufflevector(low, high, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        UVec tail = __builtin_shufflevector(low, high, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        Store(m + j, head >= threshold ? kept : Vec{});
        Store(m + j + kWidth, tail >= threshold ? kept : Vec{});
      }
    } else {
      const uint32_t first = row * uint32_t(lk);
      for (int64_t j = 0; j < lk; j += kWidth) {
        UVec u = LowBias32(LowBias32((first + uint32_t(j) + lanes) ^ key0) ^ key1) >> 16;
        Store(m + j, u >= threshold ? kept : Vec{});
      }
    }
  }
};

struct Scratch {
  std::vector<float> q, k, kt, v, vt, dout, s, dp, pm, dk, dv, bias, m;  // s, dp, pm, m: a query block
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// out[j] = a[j] · m[j] for j < n (n rounded up to whole vectors; the buffers are padded).
void Multiply(const float* a, const float* m, int64_t n, float* out) {
  for (int64_t j = 0; j < n; j += kWidth) Store(out + j, Load(a + j) * Load(m + j));
}

const bool* MaskRow(const bool* mask, const Shape& sh, int64_t b, int64_t i) {
  return mask + (b * sh.mask_rows + (sh.mask_rows == 1 ? 0 : i)) * sh.lk;
}

// Row stride of the dropout multipliers w.m: a row's hash words may run 16 past lkp.
int64_t MultiplierStride(const Shape& sh) { return sh.lkp + kWidth; }

// Rows [i0, i0 + rows) of head (b, h): turns their scores in w.s into p, with the lse read from
// lse_in or, without it, computed into lse_out; with dropout, writes each row's multiplier m to
// w.m and p ⊙ m to w.pm.
void Probabilities(const Shape& sh, const Dropout& dropout, const bool* mask, int64_t b, int64_t h,
                   int64_t i0, int rows, const float* lse_in, float* lse_out, Scratch& w) {
  const int64_t lkp = sh.lkp, stride = MultiplierStride(sh);
  bool none = false;
  for (int r = 0; r < rows; ++r) {
    const int64_t i = i0 + r, head_row = (b * sh.heads + h) * sh.lq + i;
    if (r == 0 || sh.mask_rows > 1) MaskBias(MaskRow(mask, sh, b, i), sh, w.bias.data(), &none);
    float* p = w.s.data() + r * lkp;
    const float lse = Softmax(p, w.bias.data(), none, sh, lse_in ? lse_in + head_row : nullptr);
    if (lse_out) lse_out[head_row] = lse;
    if (dropout.scale > 0) {
      dropout.Row(uint32_t(head_row), sh.lk, w.m.data() + r * stride);
      Multiply(p, w.m.data() + r * stride, sh.lk, w.pm.data() + r * lkp);
    }
  }
}

void ForwardHead(int64_t task, const Shape& sh, float scale, const Dropout& dropout,
                 const float* q, const float* k, const float* v, const bool* mask, float* o,
                 float* lse) {
  const int64_t b = task / sh.heads, h = task % sh.heads, D = sh.dim, lkp = sh.lkp;
  const int64_t stride = sh.heads * D;
  Scratch& w = ThreadScratch();
  w.q.resize(sh.lq * D); w.kt.resize(D * lkp); w.v.resize(sh.lk * D);
  w.s.resize(kQueryBlock * lkp); w.pm.resize(kQueryBlock * lkp); w.bias.resize(lkp);
  w.m.resize(kQueryBlock * MultiplierStride(sh));
  Gather(q, sh.Row(b, 0, h), stride, sh.lq, D, scale, w.q.data(), nullptr, 0);
  Gather(k, sh.KeyRow(b, 0, h), stride, sh.lk, D, 1.0f, nullptr, w.kt.data(), lkp);
  Gather(v, sh.KeyRow(b, 0, h), stride, sh.lk, D, 1.0f, w.v.data(), nullptr, 0);
  for (int64_t i0 = 0; i0 < sh.lq; i0 += kQueryBlock) {
    const int rows = std::min<int64_t>(kQueryBlock, sh.lq - i0);
    MatMul(rows, lkp, D, w.q.data() + i0 * D, D, 1, w.kt.data(), lkp, w.s.data(), lkp, false);
    Probabilities(sh, dropout, mask, b, h, i0, rows, nullptr, lse, w);
    const float* p = dropout.scale > 0 ? w.pm.data() : w.s.data();
    MatMul(rows, D, sh.lk, p, lkp, 1, w.v.data(), D, o + sh.Row(b, i0, h), stride, false);
  }
}

void BackwardHead(int64_t task, const Shape& sh, float scale, const Dropout& dropout,
                  const float* q, const float* k, const float* v, const bool* mask,
                  const float* o, const float* lse, const float* dout, float* dq, float* dk,
                  float* dv) {
  const int64_t b = task / sh.heads, h = task % sh.heads, D = sh.dim, lkp = sh.lkp;
  const int64_t stride = sh.heads * D;
  Scratch& w = ThreadScratch();
  w.q.resize(sh.lq * D); w.k.resize(sh.lk * D); w.kt.resize(D * lkp); w.vt.resize(D * lkp);
  w.dout.resize(sh.lq * D); w.s.resize(kQueryBlock * lkp); w.dp.resize(kQueryBlock * lkp);
  w.pm.resize(kQueryBlock * lkp); w.bias.resize(lkp); w.m.resize(kQueryBlock * MultiplierStride(sh));
  w.dk.assign(sh.lk * D, 0.0f); w.dv.assign(sh.lk * D, 0.0f);
  Gather(q, sh.Row(b, 0, h), stride, sh.lq, D, scale, w.q.data(), nullptr, 0);
  Gather(k, sh.KeyRow(b, 0, h), stride, sh.lk, D, 1.0f, w.k.data(), w.kt.data(), lkp);
  Gather(v, sh.KeyRow(b, 0, h), stride, sh.lk, D, 1.0f, nullptr, w.vt.data(), lkp);
  Gather(dout, sh.Row(b, 0, h), stride, sh.lq, D, 1.0f, w.dout.data(), nullptr, 0);
  for (int64_t i0 = 0; i0 < sh.lq; i0 += kQueryBlock) {
    const int rows = std::min<int64_t>(kQueryBlock, sh.lq - i0);
    MatMul(rows, lkp, D, w.q.data() + i0 * D, D, 1, w.kt.data(), lkp, w.s.data(), lkp, false);
    MatMul(rows, lkp, D, w.dout.data() + i0 * D, D, 1, w.vt.data(), lkp, w.dp.data(), lkp, false);
    Probabilities(sh, dropout, mask, b, h, i0, rows, lse, nullptr, w);
    for (int r = 0; r < rows; ++r) {
      const float* p = w.s.data() + r * lkp;
      float* dp = w.dp.data() + r * lkp;
      const float* o_row = o + sh.Row(b, i0 + r, h);
      const float* dout_row = w.dout.data() + (i0 + r) * D;
      float rowsum = 0;
      for (int64_t d = 0; d < D; ++d) rowsum += dout_row[d] * o_row[d];
      if (dropout.scale > 0) Multiply(dp, w.m.data() + r * MultiplierStride(sh), sh.lk, dp);
      for (int64_t j = 0; j < sh.lk; ++j) dp[j] = p[j] * (dp[j] - rowsum);  // ∂s, in place
    }
    const float* pm = dropout.scale > 0 ? w.pm.data() : w.s.data();
    // ∂v += (p ⊙ m)ᵀ ∂o,  ∂k += ∂sᵀ (scale q),  ∂q = scale ∂s k
    MatMul(sh.lk, D, rows, pm, 1, lkp, w.dout.data() + i0 * D, D, w.dv.data(), D, true);
    MatMul(sh.lk, D, rows, w.dp.data(), 1, lkp, w.q.data() + i0 * D, D, w.dk.data(), D, true);
    float* dq_block = dq + sh.Row(b, i0, h);
    MatMul(rows, D, sh.lk, w.dp.data(), lkp, 1, w.k.data(), D, dq_block, stride, false);
    for (int r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; ++d) dq_block[r * stride + d] *= scale;
  }
  for (int64_t j = 0; j < sh.lk; ++j)
    for (int64_t d = 0; d < D; ++d) {
      dk[sh.KeyRow(b, j, h) + d] = w.dk[j * D + d];
      dv[sh.KeyRow(b, j, h) + d] = w.dv[j * D + d];
    }
}

ffi::Error ReadShape(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k,
                     const ffi::Buffer<ffi::PRED>& mask, Shape* sh) {
  auto qd = q.dimensions(), kd = k.dimensions(), md = mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || md.size() != 3)
    return ffi::Error::InvalidArgument("attention: q and k must be [B, L, H, D], mask [B, Lq or 1, Lk]");
  *sh = Shape{qd[0], qd[1], kd[1], qd[2], qd[3], RoundUp(kd[1]), md[1]};
  if (sh->dim % kWidth != 0)
    return ffi::Error::InvalidArgument("attention: the head dimension must be a multiple of 16");
  if (md[0] != sh->batch || md[2] != sh->lk || (sh->mask_rows != 1 && sh->mask_rows != sh->lq))
    return ffi::Error::InvalidArgument("attention: mask must be [B, Lq or 1, Lk]");
  return ffi::Error::Success();
}

Dropout ReadDropout(const ffi::Buffer<ffi::U32>& key, int64_t threshold, float keep_scale) {
  return Dropout{key.typed_data()[0], key.typed_data()[1], uint32_t(threshold), keep_scale};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::U32> key,
                   float scale, int64_t threshold, float keep_scale,
                   ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse) {
  Shape sh;
  if (ffi::Error error = ReadShape(q, k, mask, &sh); error.failure()) return error;
  const Dropout dropout = ReadDropout(key, threshold, keep_scale);
  ParallelFor(pool, sh.batch * sh.heads, [&](int64_t task) {
    ForwardHead(task, sh, scale, dropout, q.typed_data(), k.typed_data(), v.typed_data(),
                mask.typed_data(), o->typed_data(), lse->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::U32> key,
                    float scale, int64_t threshold, float keep_scale, ffi::Buffer<ffi::F32> o,
                    ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv) {
  Shape sh;
  if (ffi::Error error = ReadShape(q, k, mask, &sh); error.failure()) return error;
  const Dropout dropout = ReadDropout(key, threshold, keep_scale);
  ParallelFor(pool, sh.batch * sh.heads, [&](int64_t task) {
    BackwardHead(task, sh, scale, dropout, q.typed_data(), k.typed_data(), v.typed_data(),
                 mask.typed_data(), o.typed_data(), lse.typed_data(), dout.typed_data(),
                 dq->typed_data(), dk->typed_data(), dv->typed_data());
  });
  return ffi::Error::Success();
}

// What both handlers take first: the pool, q, k, v, the mask, the dropout key words, and the
// attributes (an argument's position counts among arguments alone, so o, lse, ∂o may follow).
auto AttentionInputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()   // q
      .Arg<ffi::Buffer<ffi::F32>>()   // k
      .Arg<ffi::Buffer<ffi::F32>>()   // v
      .Arg<ffi::Buffer<ffi::PRED>>()  // mask
      .Arg<ffi::Buffer<ffi::U32>>()   // dropout key words
      .Attr<float>("scale")
      .Attr<int64_t>("threshold")
      .Attr<float>("keep_scale");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RetraxAttentionForward, Forward,
                              AttentionInputs()
                                  .Ret<ffi::Buffer<ffi::F32>>()   // o
                                  .Ret<ffi::Buffer<ffi::F32>>()); // lse

XLA_FFI_DEFINE_HANDLER_SYMBOL(RetraxAttentionBackward, Backward,
                              AttentionInputs()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // o
                                  .Arg<ffi::Buffer<ffi::F32>>()   // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()   // ∂o
                                  .Ret<ffi::Buffer<ffi::F32>>()   // ∂q
                                  .Ret<ffi::Buffer<ffi::F32>>()   // ∂k
                                  .Ret<ffi::Buffer<ffi::F32>>()); // ∂v
