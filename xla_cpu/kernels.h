// What retrax's XLA:CPU kernels share: 16-lane float vectors (GCC/clang vector extensions: one
// AVX-512 register, two AVX2 ones, four NEON ones) and a parallel loop on XLA's intra-op thread pool.
#ifndef RETRAX_CPU_KERNELS_H_
#define RETRAX_CPU_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace retrax_cpu {

namespace ffi = xla::ffi;

constexpr int kWidth = 16;
typedef float Vec __attribute__((vector_size(kWidth * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kWidth * sizeof(int32_t))));
typedef uint32_t UVec __attribute__((vector_size(kWidth * sizeof(uint32_t))));

inline Vec Load(const float* p) { Vec v; std::memcpy(&v, p, sizeof v); return v; }
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec Splat(float x) { return Vec{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline float Sum(Vec v) {
  float s = 0;
  for (int t = 0; t < kWidth; ++t) s += v[t];
  return s;
}

// Runs body(0 … n−1) on the calling thread and the pool's; returns when every index is done.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, Body body) {
  struct Progress { std::atomic<int64_t> next{0}, done{0}; };
  auto progress = std::make_shared<Progress>();
  auto work = [progress, n, body]() {
    for (int64_t i; (i = progress->next.fetch_add(1)) < n;) {
      body(i);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (progress->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace retrax_cpu

#endif  // RETRAX_CPU_KERNELS_H_
