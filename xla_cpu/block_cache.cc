// A cache of big heap blocks for glibc processes, loaded with LD_PRELOAD (retrax/host_memory.py).
//
// Requests of at least kThreshold bytes (malloc, calloc, realloc, posix_memalign, aligned_alloc,
// memalign with alignment <= 2 MiB) are served from whole 2 MiB-aligned mappings with
// MADV_HUGEPAGE. A freed block stays mapped for the next request it fits (best fit), so XLA:CPU's
// per-execution temporary buffer is faulted and zero-filled by the kernel once, not at every step.
// The cached bytes are capped at the most bytes ever live in big blocks at once: the cache never
// holds more than the largest demand already seen, smaller cached blocks are unmapped first.
// Everything else goes to glibc's own allocator (__libc_malloc and kin).
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

namespace {

constexpr size_t kPage = size_t{2} << 20;
constexpr size_t kThreshold = size_t{64} << 20;
constexpr int kSlots = 256;

struct Block {
  char* start;
  size_t capacity;
  bool live;
};

Block blocks[kSlots];
int used = 0;
size_t live_bytes = 0, cached_bytes = 0, peak_live_bytes = 0;
pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

char* map_aligned(size_t capacity) {
  size_t span = capacity + kPage;
  void* mapped = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(mapped);
  char* start = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(base) + kPage - 1) & ~(kPage - 1));
  if (start > base) munmap(base, start - base);
  if (base + span > start + capacity) munmap(start + capacity, base + span - (start + capacity));
  madvise(start, capacity, MADV_HUGEPAGE);
  return start;
}

// Unmaps cached blocks, smallest first, until the cache is within its cap. Holds `lock`.
void trim() {
  while (cached_bytes > peak_live_bytes) {
    int smallest = -1;
    for (int i = 0; i < used; ++i)
      if (!blocks[i].live && (smallest < 0 || blocks[i].capacity < blocks[smallest].capacity)) smallest = i;
    munmap(blocks[smallest].start, blocks[smallest].capacity);
    cached_bytes -= blocks[smallest].capacity;
    blocks[smallest] = blocks[--used];
  }
}

// A big block of at least `size` bytes; `zeroed`: its bytes are 0. Null if none could be mapped.
void* take(size_t size, bool zeroed) {
  size_t capacity = (size + kPage - 1) & ~(kPage - 1);
  pthread_mutex_lock(&lock);
  int best = -1;
  for (int i = 0; i < used; ++i)
    if (!blocks[i].live && blocks[i].capacity >= capacity &&
        (best < 0 || blocks[i].capacity < blocks[best].capacity))
      best = i;
  if (best >= 0) {
    blocks[best].live = true;
    cached_bytes -= blocks[best].capacity;
    live_bytes += blocks[best].capacity;
    if (live_bytes > peak_live_bytes) peak_live_bytes = live_bytes;
    char* start = blocks[best].start;
    pthread_mutex_unlock(&lock);
    if (zeroed) memset(start, 0, size);
    return start;
  }
  if (used == kSlots) {  // every slot taken: make room, or leave this one to glibc
    for (int i = 0; i < used && used == kSlots; ++i)
      if (!blocks[i].live) {
        munmap(blocks[i].start, blocks[i].capacity);
        cached_bytes -= blocks[i].capacity;
        blocks[i] = blocks[--used];
      }
    if (used == kSlots) {
      pthread_mutex_unlock(&lock);
      return nullptr;
    }
  }
  char* start = map_aligned(capacity);  // fresh anonymous pages are zero
  if (start) {
    blocks[used++] = {start, capacity, true};
    live_bytes += capacity;
    if (live_bytes > peak_live_bytes) peak_live_bytes = live_bytes;
  }
  pthread_mutex_unlock(&lock);
  return start;
}

// The live block starting at p, or -1. Holds `lock`.
int find(const void* p) {
  for (int i = 0; i < used; ++i)
    if (blocks[i].start == p && blocks[i].live) return i;
  return -1;
}

// Our blocks start on 2 MiB boundaries; glibc's chunks do not, except for memalign'd ones.
bool maybe_ours(const void* p) { return p && (reinterpret_cast<uintptr_t>(p) & (kPage - 1)) == 0; }

// Returns p's block to the cache; false if p is not one of ours.
bool give_back(void* p) {
  if (!maybe_ours(p)) return false;
  pthread_mutex_lock(&lock);
  int i = find(p);
  if (i >= 0) {
    blocks[i].live = false;
    live_bytes -= blocks[i].capacity;
    cached_bytes += blocks[i].capacity;
    trim();
  }
  pthread_mutex_unlock(&lock);
  return i >= 0;
}

// The capacity of our block at p, or 0.
size_t capacity_of(void* p) {
  if (!maybe_ours(p)) return 0;
  pthread_mutex_lock(&lock);
  int i = find(p);
  size_t capacity = i >= 0 ? blocks[i].capacity : 0;
  pthread_mutex_unlock(&lock);
  return capacity;
}

}  // namespace

extern "C" {

void* malloc(size_t size) {
  if (size >= kThreshold)
    if (void* p = take(size, false)) return p;
  return __libc_malloc(size);
}

void free(void* p) {
  if (!give_back(p)) __libc_free(p);
}

void* calloc(size_t count, size_t size) {
  size_t total;
  if (!__builtin_mul_overflow(count, size, &total) && total >= kThreshold)
    if (void* p = take(total, true)) return p;
  return __libc_calloc(count, size);
}

void* realloc(void* p, size_t size) {
  size_t capacity = capacity_of(p);
  if (!capacity) {
    if (p || size < kThreshold) return __libc_realloc(p, size);
    return malloc(size);
  }
  if (size <= capacity && size >= kThreshold) return p;
  void* moved = malloc(size);
  if (!moved) return nullptr;
  memcpy(moved, p, size < capacity ? size : capacity);
  free(p);
  return moved;
}

void* memalign(size_t alignment, size_t size) {
  if (size >= kThreshold && alignment <= kPage)
    if (void* p = take(size, false)) return p;
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }

int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment % sizeof(void*) || (alignment & (alignment - 1))) return EINVAL;
  void* p = memalign(alignment, size);
  if (!p && size) return ENOMEM;
  *out = p;
  return 0;
}

size_t malloc_usable_size(void* p) {
  if (size_t capacity = capacity_of(p)) return capacity;
  static auto glibcs = reinterpret_cast<size_t (*)(void*)>(dlsym(RTLD_NEXT, "malloc_usable_size"));
  return glibcs(p);
}

}  // extern "C"
