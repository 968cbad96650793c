"""Host memory for XLA:CPU's per-step buffers: kept mapped between steps, in huge pages.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: gigabytes
for a MiniLM training step at batch 32 × 256 tokens. glibc serves such sizes with mmap and hands
them back with munmap, so every step touches every page again, each zero-filled by the kernel:
on a 2-core KVM guest 0.4 to 1.6 s of system time a step (the hypervisor's share of it varies
from minute to minute), against 0.03 s with the buffers kept.

`with_host_memory()` is what `python -m retrax.train` calls. When the run will use XLA:CPU
(`will_run_on_cpu`: JAX_PLATFORMS names cpu first, or it is unset and the machine has no
accelerator device), the process runs again (same interpreter, same argv) with
- `block_cache.cc` preloaded (LD_PRELOAD; built on first use by `build`): requests
  of 64 MiB or more get whole 2 MiB-aligned mappings with MADV_HUGEPAGE, and a freed one stays
  mapped for the next request it fits (best fit), the cache capped at the most bytes ever live
  in such blocks at once. The MiniLM step (`benchmarks/train_step.py`'s retrax worker, dropout
  off, interleaved passes) went from 7.32 to 5.88 s, peak RSS 4.1 → 6.5 GB. RETRAX_BLOCK_CACHE=0, no
  C++ compiler, or an LD_PRELOAD already set (another allocator, say: two would serve one heap)
  leaves it out;
- GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc ≥ 2.35): glibc asks for transparent huge pages
  (madvise) on what it maps itself, and the kernel faults each 2 MiB at once.
RETRAX_HOST_MEMORY=0 turns all of it off. On TPU and GPU hosts the process is never re-executed.

`keep_freed_memory()` (one arena, no mmap, no trimming: mallopt M_ARENA_MAX = 1, M_MMAP_MAX = 0,
M_TRIM_THRESHOLD = -1) is the in-process alternative, opt-in, at the start of a process (it
reaches only threads that have not yet allocated, so before JAX's first computation): the process
keeps its whole heap until it exits, and blocks of other sizes fragment it (the trainer: peak RSS
11.9 GB in 30 steps; an earlier dropout-on step grew past 24 GB).
Without glibc (musl, macOS) all of it does nothing.
"""
import ctypes
import ctypes.util
import glob
import logging
import os
import pathlib
import platform
import sys

from . import build

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
HUGE_PAGES = "glibc.malloc.hugetlb=1"
ACCELERATOR_DEVICES = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/kfd")  # NVIDIA, TPU, ROCm
BLOCK_CACHE_SOURCE = pathlib.Path(__file__).with_name("block_cache.cc")


def block_cache_library() -> pathlib.Path | None:
  """block_cache.cc built (None, logged, without a compiler or with RETRAX_BLOCK_CACHE=0)."""
  return build.optional_library(
      "retrax's block cache", "RETRAX_BLOCK_CACHE", "XLA:CPU's step buffers are mapped afresh at every step",
      lambda compiler: build.shared_library("retrax_block_cache", compiler, (BLOCK_CACHE_SOURCE,),
                                            ("-O2", "-std=c++17", "-shared", "-fPIC")))


def will_run_on_cpu(environ=os.environ) -> bool:
  """Whether JAX will pick XLA:CPU, decided without initialising it: JAX_PLATFORMS's first entry
  is cpu, or JAX_PLATFORMS is unset and no accelerator device file exists."""
  platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return platforms[0] == "cpu"
  return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICES)


def host_memory_environment(environ=os.environ, block_cache: pathlib.Path | None = None) -> dict:
  """`environ` with HUGE_PAGES in its GLIBC_TUNABLES and `block_cache` first in its LD_PRELOAD."""
  tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t != HUGE_PAGES]
  updated = dict(environ, GLIBC_TUNABLES=":".join([*tunables, HUGE_PAGES]))
  if block_cache:
    preloads = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split() if p != str(block_cache)]
    updated["LD_PRELOAD"] = " ".join([str(block_cache), *preloads])
  return updated


def with_host_memory() -> None:
  """Re-execute this process with `host_memory_environment` (the block cache and huge pages) when
  it will run on XLA:CPU, on glibc, RETRAX_HOST_MEMORY is not 0, and it has not got them yet.
  Call it before JAX initialises and before the process has done anything it should not do twice."""
  if os.environ.get("RETRAX_HOST_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc" or not will_run_on_cpu():
    return
  cache = block_cache_library()
  preloaded = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if p != str(cache)]
  environment = host_memory_environment(os.environ, None if preloaded else cache)
  if all(environment.get(k) == os.environ.get(k) for k in ("GLIBC_TUNABLES", "LD_PRELOAD")):
    return
  if cache and preloaded:
    logging.warning("LD_PRELOAD already holds %s: retrax's block cache stays out", " ".join(preloaded))
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
