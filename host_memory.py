"""Keep freed host memory in the process, so that XLA:CPU's per-step buffers are not faulted in anew.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: 5.4 GB for a
MiniLM training step at batch 32 × 256 tokens. glibc serves such sizes with mmap and hands them
back with munmap, so every step touches every page again: 1.4 million page faults, each
zero-filled by the kernel, about a third of the step on a 2-core CPU. With one arena, no mmap
and no trimming (mallopt M_ARENA_MAX = 1, M_MMAP_MAX = 0, M_TRIM_THRESHOLD = -1), freed blocks
go back to the heap and the next step reuses them, already mapped.

Opt in, at the start of a process (it reaches only threads that have not yet allocated, so
before JAX's first computation): the process keeps its heap until it exits, and blocks of other
sizes can fragment it. In `benchmarks/train_step.py --keep-freed-memory`, with PyTorch in the
same process, retrax's dropout-off step took 10.7 s (12.8 s without it, the same day) and the
dropout-on mode then ran out of 24 GB. Without glibc (musl, macOS) it does nothing.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
  """Set glibc's malloc to reuse freed memory instead of unmapping it; True if it took."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(option, value) == 1
             for option, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
