"""retrax's XLA:CPU compile options: no YNNPACK fusions.

XLA:CPU (jaxlib 0.10) hands dots and reductions, with the elementwise ops around them, to
YNNPACK fusions by default. At BERT's shapes XLA's own dot (Eigen) was faster on a 2-core AVX-512
CPU (Zen 4): [16384, 384] @ [384, 384] in 23 ms against 39 ms, [16384, 384] @ [384, 1536] in 112
against 134 ms. The MiniLM training step (`benchmarks/train_step.py`, dropout off) took 7.6–7.9 s
against 8.4 s, and encoding SciFact documents ran at 29.2 texts/s against 26.8. Keeping YNNPACK
for reductions alone let them pull dots back in (encoding: 25.3 texts/s), so
`xla_cpu_experimental_ynn_fusion_type` is empty. An XLA_FLAGS that sets it wins; a jaxlib without
the option compiles as before. `retrax.ops.jit` passes them on XLA:CPU alone.
"""
import functools
import logging
import os

import jax
import jax.numpy as jnp

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_FUSION_TYPE: ""}


@functools.cache
def options() -> dict | None:
  """The compile options for XLA:CPU (None: XLA's defaults)."""
  if YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
    return None
  try:
    jax.jit(jnp.sin, compiler_options=CPU_OPTIONS).lower(jnp.zeros(())).compile()
  except jax.errors.JaxRuntimeError as error:  # INVALID_ARGUMENT: no such option, or no such value
    logging.warning("XLA:CPU compiles with its default fusions (%s): %s", YNN_FUSION_TYPE, error)
    return None
  return CPU_OPTIONS

