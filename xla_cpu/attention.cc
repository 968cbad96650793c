// Fused scaled dot-product attention for XLA:CPU in float32, forward and backward
// (FlashAttention's recomputation, Dao et al. 2022), as XLA FFI handlers.
//
// Self-attention of B batch rows of L positions. q, k, v, o: [T, H, D] token rows (the projections'
// own layout, so no transposes): padded, [B·L, H, D], or packed, each batch row's real tokens in
// order (see Shape); rows of no batch row come out 0. mask: [B, L or 1, L]; lse: [B, H, L].
// Dropout (keep_scale > 0) draws retrax's mask itself (`retrax.models.dropout`): the element at
// row-major index c of [B, H, L, L] is kept iff its 16-bit uniform u ≥ threshold, u from
// h(c) = g(g(c ⊕ key₀) ⊕ key₁) (g Wellons' lowbias32), two per word when L is even.
//   s = scale q kᵀ over the unmasked keys (a row with none attends uniformly to every key),
//   p = exp(s − lse),  lse = log Σ_k exp s,  m = kept · keep_scale (1 without dropout),
//   o = (p ⊙ m) v;
//   ∂v = (p ⊙ m)ᵀ ∂o,  ∂s = p ⊙ (m ⊙ ∂o vᵀ − r),  r = rowsum(∂o ⊙ o),
//   ∂q = scale ∂s k,  ∂k = scale ∂sᵀ q.
// Each (batch, head) pair is one task on XLA's intra-op thread pool; within it, blocks of query
// rows stay in cache, every product runs through one register-tiled kernel, and the products stop
// after the last key that any query attends to (the rest weigh exactly 0). The forward
// normalises o's rows, o = (e ⊙ m) v / Σ e with e = exp(s − max), rather than p's.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels.h"

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
#if defined(__AVX512F__)  // a 16-float vector is one zmm register only with AVX-512
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

// Self-attention over B batch rows of L positions. Position i of batch row b is row start[b] + i
// of the [T, H, D] arrays, for i < count[b]: count[b] = L in the padded layout ([B·L, H, D],
// start[b] = b·L), the row's length in a packed one (right padding; positions past it absent).
struct Shape {
  int64_t batch, length, heads, dim, lkp, mask_rows, tokens;
  const int32_t *start, *count;
  int64_t Row(int64_t b, int64_t i, int64_t h) const { return ((start[b] + i) * heads + h) * dim; }
};

const bool* MaskRow(const bool* mask, const Shape& sh, int64_t b, int64_t i) {
  return mask + (b * sh.mask_rows + (sh.mask_rows == 1 ? 0 : i)) * sh.length;
}

// The keys of batch row b that the products run over: one past the last key that any query
// attends to (every key when a query has none, as it attends uniformly). Beyond it every score
// is masked, so its weight is exactly 0.
int64_t AttendedKeys(const bool* mask, const Shape& sh, int64_t b) {
  int64_t keys = 0;
  for (int64_t i = 0; i < sh.mask_rows; ++i) {
    const bool* row = MaskRow(mask, sh, b, i);
    int64_t last = sh.length;
    while (last > 0 && !row[last - 1]) --last;
    if (last == 0) return sh.length;
    keys = std::max(keys, last);
  }
  return keys;
}

// r[i][j] ← r[j][i]: four rounds of the perfect shuffle (row i of 16 = interleave of rows ⌊i/2⌋, ⌊i/2⌋ + 8).
void Transpose(Vec r[kWidth]) {
  for (int round = 0; round < 4; ++round) {
    Vec out[kWidth];
    for (int i = 0; i < kWidth / 2; ++i) {
      out[2 * i] = __builtin_shufflevector(r[i], r[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      out[2 * i + 1] = __builtin_shufflevector(r[i], r[i + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    }
    std::copy(out, out + kWidth, r);
  }
}

// out[i · dim + d] = scale · x[base + i · stride + d] for i < rows: one head's rows, gathered.
void Gather(const float* x, int64_t base, int64_t stride, int64_t rows, int64_t dim, float scale, float* out) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t d = 0; d < dim; d += kWidth) Store(out + i * dim + d, Load(x + base + i * stride + d) * scale);
}

// out[d · lp + i] = x[base + i · stride + d] for i < rows, 0 up to the next multiple of 16: one
// head's rows, transposed by 16 × 16 tiles in registers.
void GatherTransposed(const float* x, int64_t base, int64_t stride, int64_t rows, int64_t dim, float* out,
                      int64_t lp) {
  for (int64_t i0 = 0; i0 < rows; i0 += kWidth)
    for (int64_t d0 = 0; d0 < dim; d0 += kWidth) {
      Vec tile[kWidth];
      for (int r = 0; r < kWidth; ++r) tile[r] = i0 + r < rows ? Load(x + base + (i0 + r) * stride + d0) : Vec{};
      Transpose(tile);
      for (int d = 0; d < kWidth; ++d) Store(out + (d0 + d) * lp + i0, tile[d]);
    }
}

// The additive mask of one row: 0 for an unmasked key, −∞ for a masked or padding key; a row
// with no unmasked key gets 0 for every key (its scores are then replaced by 0).
void MaskBias(const bool* mask, const Shape& sh, float* bias, bool* none) {
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  int64_t count = 0;
  for (int64_t j = 0; j < sh.length; ++j) {
    bias[j] = mask[j] ? 0.0f : kNone;
    count += mask[j];
  }
  *none = count == 0;
  if (*none) std::fill(bias, bias + sh.length, 0.0f);
  std::fill(bias + sh.length, bias + sh.lkp, kNone);
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

  // The multiplier m (scale where kept, else 0) of the elements [row · lk, row · lk + n), n
  // rounded up to whole vectors (up to 16 more when lk is even).
  void Row(uint32_t row, int64_t lk, int64_t n, float* m) const {
    const UVec lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const Vec kept = Splat(scale);
    if (lk % 2 == 0) {  // word w gives element 2w its low half, element 2w + 1 its high half
      const uint32_t first = row * uint32_t(lk / 2);
      for (int64_t j = 0; j < n; j += 2 * kWidth) {
        UVec h = LowBias32(LowBias32((first + uint32_t(j / 2) + lanes) ^ key0) ^ key1);
        UVec low = h & 0xFFFFu, high = h >> 16;
        UVec head = __builtin_shufflevector(low, high, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        UVec tail = __builtin_shufflevector(low, high, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        Store(m + j, head >= threshold ? kept : Vec{});
        Store(m + j + kWidth, tail >= threshold ? kept : Vec{});
      }
    } else {
      const uint32_t first = row * uint32_t(lk);
      for (int64_t j = 0; j < n; j += kWidth) {
        UVec u = LowBias32(LowBias32((first + uint32_t(j) + lanes) ^ key0) ^ key1) >> 16;
        Store(m + j, u >= threshold ? kept : Vec{});
      }
    }
  }
};

struct Scratch {
  std::vector<float> q, k, kt, v, vt, dout, s, dp, pm, dk, dv, bias, m, inverse;  // s, dp, pm, inverse: a query block
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Length of w.m, one row's dropout multipliers: its hash words may run 16 past lkp.
int64_t MultiplierLength(const Shape& sh) { return sh.lkp + kWidth; }

// Scores s[j … j + 15] plus the row's additive mask (scores replaced by 0 in a row with no key).
inline Vec Biased(const float* s, const float* bias, bool none, int64_t j) {
  return (none ? Vec{} : Load(s + j)) + Load(bias + j);
}

// One task: head h of batch row b, whose products run over `keys` keys (AttendedKeys), `width`
// of them rounded up to whole vectors.
struct Head {
  int64_t b, h, keys, width;
};

// The forward of rows [i0, i0 + rows): their scores in w.s become e = exp(s + bias − max) (and
// e ⊙ m in w.pm with dropout), lse = max + log Σ e goes to lse, and 1 / Σ e to w.inverse.
void Exponentials(const Shape& sh, const Dropout& dropout, const bool* mask, const Head& t, int64_t i0,
                  int rows, float* lse, Scratch& w) {
  // Raw pointers: through the thread_local `w`, every access in a loop would look the thread up again.
  float *bias = w.bias.data(), *m = w.m.data(), *inverse = w.inverse.data();
  bool none = false;
  for (int r = 0; r < rows; ++r) {
    const int64_t i = i0 + r, head_row = (t.b * sh.heads + t.h) * sh.length + i;
    if (r == 0 || sh.mask_rows > 1) MaskBias(MaskRow(mask, sh, t.b, i), sh, bias, &none);
    float *s = w.s.data() + r * sh.lkp, *pm = w.pm.data() + r * sh.lkp;
    Vec top = Splat(-std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < t.width; j += kWidth) {
      Vec x = Biased(s, bias, none, j);
      Store(s + j, x);
      top = top > x ? top : x;
    }
    float shift = top[0];
    for (int l = 1; l < kWidth; ++l) shift = std::max(shift, top[l]);
    Vec total{};
    for (int64_t j = 0; j < t.width; j += kWidth) {
      Vec e = Exp(Load(s + j) - shift);
      Store(s + j, e);
      total += e;
    }
    const float sum = Sum(total);
    lse[head_row] = shift + std::log(sum);
    inverse[r] = 1.0f / sum;
    if (dropout.scale > 0) {
      dropout.Row(uint32_t(head_row), sh.length, t.width, m);
      for (int64_t j = 0; j < t.width; j += kWidth) Store(pm + j, Load(s + j) * Load(m + j));
    }
  }
}

void ForwardHead(int64_t task, const Shape& sh, float scale, const Dropout& dropout,
                 const float* q, const float* k, const float* v, const bool* mask, float* o,
                 float* lse) {
  const int64_t b = task / sh.heads, h = task % sh.heads, D = sh.dim, lkp = sh.lkp, n = sh.count[b];
  float* lse_head = lse + task * sh.length;
  std::fill(lse_head + n, lse_head + sh.length, 0.0f);
  if (n == 0) return;
  const int64_t stride = sh.heads * D, keys = std::min(AttendedKeys(mask, sh, b), n);
  const Head t{b, h, keys, RoundUp(keys)};
  Scratch& w = ThreadScratch();
  w.q.resize(sh.length * D); w.kt.resize(D * lkp); w.v.resize(sh.length * D);
  w.s.resize(kQueryBlock * lkp); w.pm.resize(kQueryBlock * lkp); w.bias.resize(lkp);
  w.m.resize(MultiplierLength(sh)); w.inverse.resize(kQueryBlock);
  Gather(q, sh.Row(b, 0, h), stride, n, D, scale, w.q.data());
  GatherTransposed(k, sh.Row(b, 0, h), stride, keys, D, w.kt.data(), lkp);
  Gather(v, sh.Row(b, 0, h), stride, keys, D, 1.0f, w.v.data());
  for (int64_t i0 = 0; i0 < n; i0 += kQueryBlock) {
    const int rows = std::min<int64_t>(kQueryBlock, n - i0);
    MatMul(rows, t.width, D, w.q.data() + i0 * D, D, 1, w.kt.data(), lkp, w.s.data(), lkp, false);
    Exponentials(sh, dropout, mask, t, i0, rows, lse, w);
    const float* e = dropout.scale > 0 ? w.pm.data() : w.s.data();
    float* out = o + sh.Row(b, i0, h);
    MatMul(rows, D, keys, e, lkp, 1, w.v.data(), D, out, stride, false);  // o = (e ⊙ m) v / Σ e
    const float* inverse = w.inverse.data();
    for (int r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; d += kWidth) Store(out + r * stride + d, Load(out + r * stride + d) * inverse[r]);
  }
}

// The backward of rows [i0, i0 + rows): their scores in w.s become p = exp(s + bias − lse) (and
// p ⊙ m in w.pm with dropout), and ∂p = ∂o vᵀ in w.dp becomes ∂s = p ⊙ (m ⊙ ∂p − r), with
// r = rowsum(∂o ⊙ o).
void ScoreGradients(const Shape& sh, const Dropout& dropout, const bool* mask, const float* o, const Head& t,
                    int64_t i0, int rows, const float* lse, Scratch& w) {
  float *bias = w.bias.data(), *m = w.m.data();
  bool none = false;
  for (int r = 0; r < rows; ++r) {
    const int64_t i = i0 + r, head_row = (t.b * sh.heads + t.h) * sh.length + i;
    if (r == 0 || sh.mask_rows > 1) MaskBias(MaskRow(mask, sh, t.b, i), sh, bias, &none);
    float *s = w.s.data() + r * sh.lkp, *dp = w.dp.data() + r * sh.lkp, *pm = w.pm.data() + r * sh.lkp;
    const float *o_row = o + sh.Row(t.b, i, t.h), *dout_row = w.dout.data() + i * sh.dim;
    Vec total{};
    for (int64_t d = 0; d < sh.dim; d += kWidth) total += Load(dout_row + d) * Load(o_row + d);
    const Vec shift = Splat(lse[head_row]), rowsum = Splat(Sum(total));
    if (dropout.scale > 0) dropout.Row(uint32_t(head_row), sh.length, t.width, m);
    for (int64_t j = 0; j < t.width; j += kWidth) {
      Vec p = Exp(Biased(s, bias, none, j) - shift), g = Load(dp + j);
      Store(s + j, p);
      if (dropout.scale > 0) {
        Vec mj = Load(m + j);
        Store(pm + j, p * mj);
        g *= mj;
      }
      Store(dp + j, p * (g - rowsum));
    }
  }
}

void BackwardHead(int64_t task, const Shape& sh, float scale, const Dropout& dropout,
                  const float* q, const float* k, const float* v, const bool* mask,
                  const float* o, const float* lse, const float* dout, float* dq, float* dk,
                  float* dv) {
  const int64_t b = task / sh.heads, h = task % sh.heads, D = sh.dim, lkp = sh.lkp, n = sh.count[b];
  if (n == 0) return;
  const int64_t stride = sh.heads * D, keys = std::min(AttendedKeys(mask, sh, b), n);
  const Head t{b, h, keys, RoundUp(keys)};
  Scratch& w = ThreadScratch();
  w.q.resize(sh.length * D); w.k.resize(sh.length * D); w.kt.resize(D * lkp); w.vt.resize(D * lkp);
  w.dout.resize(sh.length * D); w.s.resize(kQueryBlock * lkp); w.dp.resize(kQueryBlock * lkp);
  w.pm.resize(kQueryBlock * lkp); w.bias.resize(lkp); w.m.resize(MultiplierLength(sh));
  w.dk.assign(n * D, 0.0f); w.dv.assign(n * D, 0.0f);
  Gather(q, sh.Row(b, 0, h), stride, n, D, scale, w.q.data());
  Gather(k, sh.Row(b, 0, h), stride, keys, D, scale, w.k.data());
  GatherTransposed(k, sh.Row(b, 0, h), stride, keys, D, w.kt.data(), lkp);
  GatherTransposed(v, sh.Row(b, 0, h), stride, keys, D, w.vt.data(), lkp);
  Gather(dout, sh.Row(b, 0, h), stride, n, D, 1.0f, w.dout.data());
  for (int64_t i0 = 0; i0 < n; i0 += kQueryBlock) {
    const int rows = std::min<int64_t>(kQueryBlock, n - i0);
    MatMul(rows, t.width, D, w.q.data() + i0 * D, D, 1, w.kt.data(), lkp, w.s.data(), lkp, false);
    MatMul(rows, t.width, D, w.dout.data() + i0 * D, D, 1, w.vt.data(), lkp, w.dp.data(), lkp, false);
    ScoreGradients(sh, dropout, mask, o, t, i0, rows, lse, w);
    const float* pm = dropout.scale > 0 ? w.pm.data() : w.s.data();
    // ∂v += (p ⊙ m)ᵀ ∂o,  ∂k += ∂sᵀ (scale q),  ∂q = ∂s (scale k)
    MatMul(keys, D, rows, pm, 1, lkp, w.dout.data() + i0 * D, D, w.dv.data(), D, true);
    MatMul(keys, D, rows, w.dp.data(), 1, lkp, w.q.data() + i0 * D, D, w.dk.data(), D, true);
    MatMul(rows, D, keys, w.dp.data(), lkp, 1, w.k.data(), D, dq + sh.Row(b, i0, h), stride, false);
  }
  const float *dk_head = w.dk.data(), *dv_head = w.dv.data();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < D; d += kWidth) {
      Store(dk + sh.Row(b, j, h) + d, Load(dk_head + j * D + d));
      Store(dv + sh.Row(b, j, h) + d, Load(dv_head + j * D + d));
    }
}

// Zeroes the token rows of x [T, H, D] that no batch row covers (a packed layout's slack).
void ZeroUncovered(const Shape& sh, float* x) {
  std::vector<bool> covered(sh.tokens);
  for (int64_t b = 0; b < sh.batch; ++b) std::fill_n(covered.begin() + sh.start[b], sh.count[b], true);
  const int64_t width = sh.heads * sh.dim;
  for (int64_t t = 0; t < sh.tokens; ++t)
    if (!covered[t]) std::fill_n(x + t * width, width, 0.0f);
}

template <typename A, typename B>
bool SameDims(const A& a, const B& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

ffi::Error ReadShape(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k, const ffi::Buffer<ffi::F32>& v,
                     const ffi::Buffer<ffi::PRED>& mask, const ffi::Buffer<ffi::S32>& start,
                     const ffi::Buffer<ffi::S32>& count, Shape* sh) {
  auto qd = q.dimensions(), md = mask.dimensions();
  if (qd.size() != 3 || md.size() != 3 || !SameDims(k.dimensions(), qd) || !SameDims(v.dimensions(), qd))
    return ffi::Error::InvalidArgument("attention: q, k and v must be [T, H, D], mask [B, L or 1, L]");
  *sh = Shape{md[0], md[2], qd[1], qd[2], RoundUp(md[2]), md[1], qd[0], start.typed_data(), count.typed_data()};
  if (sh->dim % kWidth != 0)
    return ffi::Error::InvalidArgument("attention: the head dimension must be a multiple of 16");
  if (sh->mask_rows != 1 && sh->mask_rows != sh->length)
    return ffi::Error::InvalidArgument("attention: mask must be [B, L or 1, L]");
  if (start.dimensions().size() != 1 || start.dimensions()[0] != sh->batch || !SameDims(count.dimensions(), start.dimensions()))
    return ffi::Error::InvalidArgument("attention: start and count must be [B]");
  for (int64_t b = 0; b < sh->batch; ++b)
    if (sh->start[b] < 0 || sh->count[b] < 0 || sh->count[b] > sh->length || sh->start[b] + sh->count[b] > sh->tokens)
      return ffi::Error::InvalidArgument("attention: batch row " + std::to_string(b) + " runs outside the tokens");
  return ffi::Error::Success();
}

Dropout ReadDropout(const ffi::Buffer<ffi::U32>& key, int64_t threshold, float keep_scale) {
  return Dropout{key.typed_data()[0], key.typed_data()[1], uint32_t(threshold), keep_scale};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::S32> start,
                   ffi::Buffer<ffi::S32> count, ffi::Buffer<ffi::U32> key, float scale, int64_t threshold,
                   float keep_scale, ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> lse) {
  Shape sh;
  if (ffi::Error error = ReadShape(q, k, v, mask, start, count, &sh); error.failure()) return error;
  const Dropout dropout = ReadDropout(key, threshold, keep_scale);
  ParallelFor(pool, sh.batch * sh.heads, [&](int64_t task) {
    ForwardHead(task, sh, scale, dropout, q.typed_data(), k.typed_data(), v.typed_data(),
                mask.typed_data(), o->typed_data(), lse->typed_data());
  });
  ZeroUncovered(sh, o->typed_data());
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::S32> start,
                    ffi::Buffer<ffi::S32> count, ffi::Buffer<ffi::U32> key, float scale, int64_t threshold,
                    float keep_scale, ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  Shape sh;
  if (ffi::Error error = ReadShape(q, k, v, mask, start, count, &sh); error.failure()) return error;
  const Dropout dropout = ReadDropout(key, threshold, keep_scale);
  ParallelFor(pool, sh.batch * sh.heads, [&](int64_t task) {
    BackwardHead(task, sh, scale, dropout, q.typed_data(), k.typed_data(), v.typed_data(),
                 mask.typed_data(), o.typed_data(), lse.typed_data(), dout.typed_data(),
                 dq->typed_data(), dk->typed_data(), dv->typed_data());
  });
  for (float* x : {dq->typed_data(), dk->typed_data(), dv->typed_data()}) ZeroUncovered(sh, x);
  return ffi::Error::Success();
}

// What both handlers take first: the pool, q, k, v, the mask, each batch row's start and count,
// the dropout key words, and the attributes (an argument's position counts among arguments
// alone, so o, lse, ∂o may follow).
auto AttentionInputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()   // q
      .Arg<ffi::Buffer<ffi::F32>>()   // k
      .Arg<ffi::Buffer<ffi::F32>>()   // v
      .Arg<ffi::Buffer<ffi::PRED>>()  // mask
      .Arg<ffi::Buffer<ffi::S32>>()   // start
      .Arg<ffi::Buffer<ffi::S32>>()   // count
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
