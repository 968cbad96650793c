"""ops.jit: on XLA:CPU (`xla_cpu.compile_options`), nothing compiles into YNNPACK fusions; XLA_FLAGS and old jaxlibs keep XLA's defaults."""
import logging
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import retrax
from retrax import ops
from retrax.xla_cpu import compile_options
from retrax.models.wheel import minilm_path

cpu = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are XLA:CPU's")


def ynn_dots(compiled_text: str) -> int:
  """How many dots the compiled HLO runs inside YNNPACK fusions (XLA's default puts them there)."""
  bodies = dict(re.findall(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", compiled_text, re.S | re.M))
  called = re.findall(r"calls=%([\w.\-]+), [^\n]*__ynn_fusion", compiled_text)
  return sum(bodies[name].count(" dot(") for name in called)


def dense(x, w, b):
  return jnp.tanh(x @ w + b).sum(0)


@cpu
def test_dots_leave_ynnpack_and_give_the_same_numbers():
  rng = np.random.default_rng(0)
  args = (rng.standard_normal((512, 64), np.float32), rng.standard_normal((64, 96), np.float32),
          rng.standard_normal(96, np.float32))
  ours, xla = ops.jit(dense), jax.jit(dense)
  text = ours.lower(*args).compile().as_text()
  assert " dot(" in text and ynn_dots(text) == 0
  np.testing.assert_allclose(ours(*args), xla(*args), rtol=1e-5, atol=1e-4)


@cpu
def test_the_encoder_compiles_with_the_options():
  retriever = retrax.load(minilm_path())
  batch = next(retriever.text.batches(["a short text", "another one"], "document", 2))
  tokens = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "token_type_ids": batch.token_type_ids}
  text = retriever._encode_batch.lower(retriever.params, tokens, None).compile().as_text()
  assert text.count(" dot(") >= 6 * 6 and ynn_dots(text) == 0  # six projections in each of six layers


def options_in_subprocess(xla_flags: str) -> str:
  program = ("import jax; from retrax.xla_cpu import compile_options; "
             "print(jax.default_backend(), compile_options.options())")
  environment = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True, text=True,
                        check=True).stdout.strip()


def test_xla_flags_that_set_the_fusion_type_win():
  ours = options_in_subprocess("")
  assert ours == f"cpu {compile_options.CPU_OPTIONS}"
  assert options_in_subprocess("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT") == "cpu None"


@cpu
def test_a_jaxlib_without_the_option_compiles_with_its_defaults(monkeypatch, caplog):
  monkeypatch.setattr(compile_options, "CPU_OPTIONS", {"xla_cpu_no_such_option": "x"})
  compile_options.options.cache_clear()
  try:
    with caplog.at_level(logging.WARNING):
      assert compile_options.options() is None
      assert float(ops.jit(jnp.sin)(0.5)) == pytest.approx(np.sin(0.5))
  finally:
    compile_options.options.cache_clear()
  assert "No such compile option" in caplog.text
