"""keep_freed_memory: repeated XLA:CPU executions reuse their temporary buffer instead of faulting it in anew."""
import subprocess
import sys

import pytest

RUNS = 4
PROGRAM = f"""
import resource, sys
from retrax.host_memory import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x)).sum())  # three 64 MiB temporaries
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({RUNS}):
  f(x).block_until_ready()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
TEMPORARY_PAGES = 3 * 64 * 2**20 // 4096  # per run


def page_faults(mode: str) -> tuple[str, int]:
  """(what keep_freed_memory returned, minor page faults over RUNS runs after two warm-up runs)."""
  out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
  took, faults = out.stdout.split()
  return took, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and page-fault counts are Linux's")
def test_repeated_executions_reuse_the_temporary_buffer():
  _, faults_default = page_faults("default")
  took, faults_kept = page_faults("keep")
  assert faults_default > RUNS * TEMPORARY_PAGES  # glibc unmaps the buffer and each run faults it in again
  assert took == "True"
  assert faults_kept * 20 < faults_default  # measured: 50 to 130 times fewer
