"""Host memory for XLA:CPU's per-step buffers: kept mapped between steps, in huge pages.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: gigabytes
for a MiniLM training step at batch 32 × 256 tokens. glibc serves such sizes with mmap and hands
them back with munmap, so every step touches every page again, each zero-filled by the kernel:
on a 2-core KVM guest 0.4 to 1.6 s of system time a step (the hypervisor's share of it varies
from minute to minute), against 0.03 s with the buffers kept.

`with_host_memory()` is what `python -m retrax.train` calls: the process runs again (same
interpreter, same argv) with
- `block_cache.cc` preloaded (LD_PRELOAD; built on first use by `retrax.native_build`): requests
  of 64 MiB or more get whole 2 MiB-aligned mappings with MADV_HUGEPAGE, and a freed one stays
  mapped for the next request it fits (best fit), the cache capped at the most bytes ever live
  in such blocks at once. The MiniLM step (`benchmarks/train_step.py`'s retrax worker, dropout
  off, interleaved passes) went from 7.32 to 5.88 s, peak RSS 4.1 → 6.5 GB. RETRAX_BLOCK_CACHE=0, or
  no C++ compiler, leaves it out;
- GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc ≥ 2.35): glibc asks for transparent huge pages
  (madvise) on what it maps itself, and the kernel faults each 2 MiB at once.

`keep_freed_memory()` (one arena, no mmap, no trimming: mallopt M_ARENA_MAX = 1, M_MMAP_MAX = 0,
M_TRIM_THRESHOLD = -1) is the in-process alternative, opt-in, at the start of a process (it
reaches only threads that have not yet allocated, so before JAX's first computation): the process
keeps its whole heap until it exits, and blocks of other sizes fragment it (the trainer: peak RSS
11.9 GB in 30 steps; an earlier dropout-on step grew past 24 GB).
Without glibc (musl, macOS) all of it does nothing.
"""
import ctypes
import ctypes.util
import os
import pathlib
import platform
import sys

from . import native_build

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
HUGE_PAGES = "glibc.malloc.hugetlb=1"
BLOCK_CACHE_SOURCE = pathlib.Path(__file__).with_name("block_cache.cc")


def block_cache_library() -> pathlib.Path | None:
  """block_cache.cc built (None, logged, without a compiler or with RETRAX_BLOCK_CACHE=0)."""
  return native_build.optional_library(
      "retrax's block cache", "RETRAX_BLOCK_CACHE", "XLA:CPU's step buffers are mapped afresh at every step",
      lambda compiler: native_build.shared_library("retrax_block_cache", compiler, (BLOCK_CACHE_SOURCE,),
                                                   ("-O2", "-std=c++17", "-shared", "-fPIC")))


def host_memory_environment(environ=os.environ, block_cache: pathlib.Path | None = None) -> dict:
  """`environ` with HUGE_PAGES in its GLIBC_TUNABLES and `block_cache` first in its LD_PRELOAD."""
  tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t != HUGE_PAGES]
  updated = dict(environ, GLIBC_TUNABLES=":".join([*tunables, HUGE_PAGES]))
  if block_cache:
    preloads = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split() if p != str(block_cache)]
    updated["LD_PRELOAD"] = " ".join([str(block_cache), *preloads])
  return updated


def with_host_memory() -> None:
  """Re-execute this process with `host_memory_environment` (the block cache and huge pages),
  unless it has them or is not on glibc. Call it before the process has done anything it should
  not do twice."""
  if platform.libc_ver()[0] != "glibc":
    return
  environment = host_memory_environment(os.environ, block_cache_library())
  if all(environment.get(k) == os.environ.get(k) for k in ("GLIBC_TUNABLES", "LD_PRELOAD")):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environment)


def keep_freed_memory() -> bool:
  """Set glibc's malloc to reuse freed memory instead of unmapping it; True if it took."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(option, value) == 1
             for option, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
