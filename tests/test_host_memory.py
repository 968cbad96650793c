"""host_memory: repeated XLA:CPU executions fault their temporary buffer in by huge pages, or reuse it."""
import pathlib
import subprocess
import sys

import pytest

RUNS = 4
PROGRAM = f"""
import os, resource, sys
from retrax import host_memory
took = {{"keep": host_memory.keep_freed_memory, "huge": host_memory.with_huge_pages}}.get(sys.argv[1], lambda: None)()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x)).sum())  # three 64 MiB temporaries
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({RUNS}):
  f(x).block_until_ready()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])
"""
TEMPORARY_PAGES = 3 * 64 * 2**20 // 4096  # per run
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and page-fault counts are Linux's")


def run(mode: str, *argv) -> tuple[str, int, str, str]:
  """(what the mode's call returned, minor page faults over RUNS runs after two warm-up runs, GLIBC_TUNABLES, argv)."""
  out = subprocess.run([sys.executable, "-c", PROGRAM, mode, *argv], capture_output=True, text=True, check=True)
  took, faults, tunables, args = out.stdout.strip().split(maxsplit=3)
  return took, int(faults), tunables, args


@linux
def test_repeated_executions_reuse_the_temporary_buffer():
  _, faults_default, _, _ = run("default")
  took, faults_kept, _, _ = run("keep")
  assert faults_default > RUNS * TEMPORARY_PAGES  # glibc unmaps the buffer and each run faults it in again
  assert took == "True"
  assert faults_kept * 20 < faults_default  # measured: 50 to 130 times fewer


@linux
@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text(), reason="transparent huge pages are off here")
def test_huge_pages_rerun_the_process_and_fault_in_2_mib_at_a_time():
  _, faults_default, _, _ = run("default", "--flag", "a b")
  _, faults_huge, tunables, args = run("huge", "--flag", "a b")
  assert "glibc.malloc.hugetlb=1" in tunables.split(":")
  assert args == "['huge', '--flag', 'a b']"  # the same arguments after the re-execution
  assert faults_default > RUNS * TEMPORARY_PAGES
  assert faults_huge * 20 < faults_default
