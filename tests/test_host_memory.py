"""host_memory: repeated XLA:CPU executions reuse their temporary buffer (the block cache, or glibc keeping
freed memory); the block cache keeps malloc's contract."""
import glob
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from retrax.xla_cpu import host_memory

RUNS = 4
PROGRAM = f"""
import os, resource, sys
from retrax.xla_cpu import host_memory
took = {{"keep": host_memory.keep_freed_memory, "host": host_memory.with_host_memory}}.get(sys.argv[1], lambda: None)()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x)).sum())  # three 64 MiB temporaries
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({RUNS}):
  f(x).block_until_ready()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get("GLIBC_TUNABLES"),
      os.environ.get("LD_PRELOAD", "-").replace(" ", ":"), sys.argv[1:])
"""
TEMPORARY_PAGES = 3 * 64 * 2**20 // 4096  # per run
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and page-fault counts are Linux's")


def run(mode: str, *argv) -> tuple[str, int, str, str, str]:
  """(what the mode's call returned, minor page faults over RUNS runs after two warm-up runs, GLIBC_TUNABLES,
  LD_PRELOAD, argv)."""
  out = subprocess.run([sys.executable, "-c", PROGRAM, mode, *argv], capture_output=True, text=True, check=True)
  took, faults, tunables, preload, args = out.stdout.strip().split(maxsplit=4)
  return took, int(faults), tunables, preload, args


@linux
def test_repeated_executions_reuse_the_temporary_buffer():
  _, faults_default, _, _, _ = run("default")
  took, faults_kept, _, _, _ = run("keep")
  assert faults_default > RUNS * TEMPORARY_PAGES  # glibc unmaps the buffer and each run faults it in again
  assert took == "True"
  assert faults_kept * 20 < faults_default  # measured: 50 to 130 times fewer


@linux
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for the block cache")
def test_the_trainers_environment_reruns_the_process_with_the_block_cache_and_huge_pages():
  _, faults_default, _, _, _ = run("default", "--flag", "a b")
  _, faults_host, tunables, preload, args = run("host", "--flag", "a b")
  assert "glibc.malloc.hugetlb=1" in tunables.split(":")
  assert preload.split(":")[0] == str(host_memory.block_cache_library())
  assert args == "['host', '--flag', 'a b']"  # the same arguments after the re-execution
  assert faults_default > RUNS * TEMPORARY_PAGES  # glibc unmaps the buffer and each run faults it in again
  assert faults_host * 20 < faults_default


CONTRACT = """
import ctypes
import numpy as np
libc = ctypes.CDLL(None)
for name, res, args in (("malloc", ctypes.c_void_p, [ctypes.c_size_t]), ("calloc", ctypes.c_void_p, [ctypes.c_size_t] * 2),
                        ("realloc", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]), ("free", None, [ctypes.c_void_p]),
                        ("malloc_usable_size", ctypes.c_size_t, [ctypes.c_void_p]),
                        ("posix_memalign", ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t])):
  getattr(libc, name).restype, getattr(libc, name).argtypes = res, args
MiB = 2**20
checks = {}
def view(address, size):  # the bytes in place, compared by min and max: no big allocation of its own
  return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))
a = libc.malloc(100 * MiB)
checks["2 MiB-aligned"] = a % (2 * MiB) == 0 and libc.malloc_usable_size(a) >= 100 * MiB
ctypes.memset(a, 7, 100 * MiB)
libc.free(a)
b = libc.calloc(25 * MiB, 4)
checks["reused and zeroed"] = b == a and view(b, 100 * MiB).max() == 0
libc.free(b)
c = libc.malloc(300 * MiB)  # no cached block fits: a new one
libc.free(c)  # cached 100 + 300 MiB, over the most ever live (300): the 100 MiB block is unmapped
d = libc.malloc(70 * MiB)
checks["best fit within the cap"] = d == c
ctypes.memset(d, 3, 70 * MiB)
e = libc.realloc(d, 400 * MiB)
checks["realloc keeps the bytes"] = e != d and view(e, 70 * MiB).min() == view(e, 70 * MiB).max() == 3
libc.free(e)
p = ctypes.c_void_p()
checks["posix_memalign"] = libc.posix_memalign(ctypes.byref(p), 4096, 80 * MiB) == 0 and p.value % 4096 == 0
libc.free(p)
small = libc.malloc(1000)
checks["small blocks are glibc's"] = small % (2 * MiB) != 0 and libc.malloc_usable_size(small) >= 1000
libc.free(small)
print({name: bool(ok) for name, ok in checks.items()})
"""


@linux
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for the block cache")
def test_the_block_cache_keeps_mallocs_contract():
  environment = host_memory.host_memory_environment(os.environ, host_memory.block_cache_library())
  out = subprocess.run([sys.executable, "-c", CONTRACT], capture_output=True, text=True, env=environment, check=True)
  checks = eval(out.stdout.strip().splitlines()[-1])
  assert all(checks.values()), checks


STARTS = """
import logging, os, sys
print("started", flush=True)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from retrax.xla_cpu import host_memory
host_memory.with_host_memory()
print("preload", os.environ.get("LD_PRELOAD", "-").replace(" ", ":"), "tunables", os.environ.get("GLIBC_TUNABLES", "-"))
"""


def starts(**environment) -> tuple[int, str, str]:
  """(how many times the process started, its last stdout line, its stderr) under `environment`."""
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "JAX_PLATFORMS")}
  out = subprocess.run([sys.executable, "-c", STARTS], capture_output=True, text=True, check=True,
                       env=dict(env, **environment))
  return out.stdout.count("started"), out.stdout.strip().splitlines()[-1], out.stderr


@linux
@pytest.mark.parametrize("platforms", ["cuda", "tpu", "cuda,cpu"])
def test_a_run_bound_for_an_accelerator_is_not_executed_twice(platforms):
  assert starts(JAX_PLATFORMS=platforms)[:2] == (1, "preload - tunables -")


@linux
def test_retrax_host_memory_0_turns_all_of_it_off():
  assert starts(JAX_PLATFORMS="cpu", RETRAX_HOST_MEMORY="0")[:2] == (1, "preload - tunables -")


@linux
def test_no_accelerator_device_means_xla_cpu():
  assert host_memory.will_run_on_cpu({}) == (not any(
      glob.glob(pattern) for pattern in host_memory.ACCELERATOR_DEVICES))
  assert host_memory.will_run_on_cpu({"JAX_PLATFORMS": "cpu"}) and not host_memory.will_run_on_cpu({"JAX_PLATFORMS": "tpu"})


@linux
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for the block cache")
def test_another_preloaded_allocator_keeps_its_place_and_the_block_cache_stays_out(tmp_path):
  allocator = tmp_path / "libother_malloc.so"  # a preloadable library that allocates nothing itself
  subprocess.run([os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-x", "c++", "-", "-o", str(allocator)],
                 input="extern \"C\" int other_malloc_marker() { return 1; }\n", text=True, check=True)
  count, line, stderr = starts(JAX_PLATFORMS="cpu", LD_PRELOAD=str(allocator))
  assert (count, line) == (2, f"preload {allocator} tunables glibc.malloc.hugetlb=1")
  assert stderr.count(f"LD_PRELOAD already holds {allocator}: retrax's block cache stays out") == 1


@linux
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for the block cache")
def test_a_cpu_run_is_executed_once_more_with_the_block_cache():
  count, line, _ = starts(JAX_PLATFORMS="cpu")
  assert (count, line) == (2, f"preload {host_memory.block_cache_library()} tunables glibc.malloc.hugetlb=1")
