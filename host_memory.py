"""Host memory for XLA:CPU's per-step buffers: huge pages for glibc's mmaps, or freed memory kept.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: 5.4 GB for a
MiniLM training step at batch 32 × 256 tokens. glibc serves such sizes with mmap and hands them
back with munmap, so every step touches every page again: 1.4 million page faults, each
zero-filled by the kernel, about a fifth of the step on a 2-core CPU.

`with_huge_pages()` is the safe one, and `python -m retrax.train` calls it: the process runs
again with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc ≥ 2.35), so that malloc asks for
transparent huge pages (madvise) on the buffers it maps, and the kernel faults each 2 MiB at
once. The buffers are still unmapped after each step, so memory does not grow. Measured on the
MiniLM step (`benchmarks/train_step.py`'s retrax worker, dropout off): 12.7 s → 11.0 s, peak RSS
7.5 → 7.6 GB.

`keep_freed_memory()` (one arena, no mmap, no trimming: mallopt M_ARENA_MAX = 1, M_MMAP_MAX = 0,
M_TRIM_THRESHOLD = -1) reuses freed blocks already mapped and saves more (10.1 s), but is opt-in,
at the start of a process (it reaches
only threads that have not yet allocated, so before JAX's first computation): the process keeps
its heap until it exits, and blocks of other sizes fragment it. The dropout-on step, whose
buffers differ in size from program to program, grew past 24 GB within its first steps.
Without glibc (musl, macOS) both do nothing.
"""
import ctypes
import ctypes.util
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def huge_pages_environment(environ=os.environ) -> dict:
  """`environ` with HUGE_PAGES added to its GLIBC_TUNABLES."""
  tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t != HUGE_PAGES]
  return dict(environ, GLIBC_TUNABLES=":".join([*tunables, HUGE_PAGES]))


def with_huge_pages() -> None:
  """Re-execute this process (same interpreter, same argv) with HUGE_PAGES, unless it has them or
  is not on glibc. Call it before the process has done anything it should not do twice."""
  if platform.libc_ver()[0] != "glibc" or HUGE_PAGES in os.environ.get("GLIBC_TUNABLES", "").split(":"):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, huge_pages_environment())


def keep_freed_memory() -> bool:
  """Set glibc's malloc to reuse freed memory instead of unmapping it; True if it took."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(option, value) == 1
             for option, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
