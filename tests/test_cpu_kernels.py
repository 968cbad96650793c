"""retrax's XLA:CPU kernels: built once and atomically, XLA's ops without a compiler, the layer
norm kernel against torch's autograd (the attention kernel's tests are in test_attention.py), and
`cpu_dense`'s split weight gradient against torch's."""
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from retrax import ops
from retrax.xla_cpu import dense as cpu_dense
from retrax.xla_cpu import layer_norm as cpu_layer_norm
from retrax.xla_cpu.kernels import one_cpu_device


def test_the_kernels_are_built_once_and_atomically(cpu_kernels, tmp_path, monkeypatch):
  monkeypatch.setenv("RETRAX_KERNEL_CACHE", str(tmp_path))
  first = cpu_kernels._compile(os.environ.get("CXX", "g++"))
  mtime = first.stat().st_mtime_ns
  assert cpu_kernels._compile(os.environ.get("CXX", "g++")) == first and first.stat().st_mtime_ns == mtime
  assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_a_failed_build_falls_back_to_xlas_ops_shows_the_first_error_and_is_remembered(tmp_path):
  """A compiler that fails (after 6,000 characters of warnings) is run once per machine: the
  warning shows its first error, XLA's ops run, and the next process reads the failure back."""
  failing, calls = tmp_path / "failing-c++", tmp_path / "calls"
  failing.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "failing-c++ 1.0" && exit 0\n'
                     f'echo build >> {calls}\n'
                     'for i in $(seq 100); do echo "x.cc:$i: warning: something sixty characters long, padded" >&2; done\n'
                     'echo "x.cc:65: error: no such thing" >&2; echo "x.cc:66: error: a later one" >&2; exit 1\n')
  failing.chmod(0o755)
  script = ("import jax, jax.numpy as jnp\n"
            "from flax import nnx\n"
            "from retrax.ops import attention, layer_norm\n"
            "norm = nnx.LayerNorm(16, rngs=nnx.Rngs(0))\n"
            "q = jnp.ones((1, 4, 1, 16)); mask = jnp.ones((1, 1, 4), bool)\n"
            "f = jax.jit(lambda q: attention(q, q, q, mask) + layer_norm(norm, q))\n"
            "assert 'retrax_' not in f.lower(q).compile().as_text()\n"
            "print(float(f(q).sum()))\n")
  env = dict(os.environ, CXX=str(failing), RETRAX_KERNEL_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
             RETRAX_CPU_KERNELS="1")
  for run in ("first", "second"):
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split()[-1]) == 64.0  # attention of equal rows is the row; the norm of a constant is 0
    assert "retrax's CPU kernels did not build" in result.stderr and "x.cc:65: error: no such thing" in result.stderr
    assert "warning: something" not in result.stderr
    assert calls.read_text() == "build\n", run  # the compiler ran in the first process only
  assert "failed on attention.cc, layer_norm.cc before" in result.stderr
  assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".failed"]


def test_the_kernels_build_for_avx2_alone(cpu_kernels, tmp_path):
  """-march=x86-64-v3 (AVX2, no AVX-512): the kernels build, and attention and the layer norm match XLA's ops."""
  if platform.machine() != "x86_64":
    pytest.skip("x86-64 code generation")
  script = ("import jax, jax.numpy as jnp, numpy as np\n"
            "from flax import nnx\n"
            "from retrax import ops\n"
            "from retrax.models.backbones import attention as xla\n"
            "from retrax.xla_cpu import kernels\n"
            "assert kernels.available()\n"
            "norm = nnx.LayerNorm(32, rngs=nnx.Rngs(0))\n"
            "x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 24, 2, 32)), jnp.float32)\n"
            "mask = jnp.asarray(np.arange(24)[None, None] < np.array([24, 13])[:, None, None])\n"
            "fused = jax.jit(lambda x: ops.attention(x, x * 0.5, x + 1, mask) + ops.layer_norm(norm, x))\n"
            "reference = jax.jit(lambda x: xla.attention(x, x * 0.5, x + 1, mask) + norm(x))\n"
            "assert 'retrax_attention' in fused.lower(x).compile().as_text()\n"
            "print(float(jnp.abs(fused(x) - reference(x)).max()))\n")
  env = dict(os.environ, RETRAX_CPU_MARCH="x86-64-v3", RETRAX_KERNEL_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert float(result.stdout.split()[-1]) < 1e-5
  assert [p.suffix for p in tmp_path.iterdir()] == [".so"]


def torch_layer_norm(x, scale, bias, eps, dy):
  """y = LayerNorm(x) and the gradients of Σ y ⊙ dy with respect to x, scale and bias."""
  tx = torch.tensor(x, requires_grad=True)
  norm = torch.nn.LayerNorm(x.shape[-1], eps=eps)
  with torch.no_grad():
    norm.weight.copy_(torch.tensor(scale))
    norm.bias.copy_(torch.tensor(bias))
  y = norm(tx)
  y.backward(torch.tensor(dy))
  return [t.detach().numpy() for t in (y, tx.grad, norm.weight.grad, norm.bias.grad)]


@pytest.mark.parametrize("shape, eps", [((3, 37, 32), 1e-12), ((130, 384), 1e-5)],
                         ids=["rows-in-a-partial-block", "minilm-width-two-blocks"])
def test_layer_norm_kernel_and_its_backward_match_torch(cpu_kernels, shape, eps):
  rng = np.random.default_rng(0)
  x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
  dy = rng.standard_normal(shape).astype(np.float32)
  scale = (rng.random(shape[-1]) + 0.5).astype(np.float32)
  bias = rng.standard_normal(shape[-1]).astype(np.float32)
  norm = nnx.LayerNorm(shape[-1], epsilon=eps, rngs=nnx.Rngs(0))
  norm.scale[...], norm.bias[...] = scale, bias
  graphdef, params = nnx.split(norm)

  def run(params, x, dy):
    y, pullback = jax.vjp(lambda p, x: cpu_layer_norm.layer_norm(nnx.merge(graphdef, p), x), params, x)
    dparams, dx = pullback(dy)
    return y, dx, dparams["scale"][...], dparams["bias"][...]

  step = ops.jit(run)
  text = step.lower(params, x, dy).compile().as_text()
  assert "retrax_layer_norm_forward" in text and "retrax_layer_norm_backward" in text
  for ours, theirs in zip(step(params, x, dy), torch_layer_norm(x, scale, bias, eps, dy)):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-6 * np.abs(theirs).max())


def test_layer_norm_outside_the_kernel_is_the_module(cpu_kernels):
  """bfloat16, or a width that is not a multiple of 16, runs nnx.LayerNorm itself."""
  for dtype, width in ((jnp.bfloat16, 32), (jnp.float32, 24)):
    norm = nnx.LayerNorm(width, dtype=dtype, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((5, width)), dtype)
    assert not cpu_layer_norm.applies(norm, x)
    text = jax.jit(lambda x: ops.layer_norm(norm, x)).lower(x).compile().as_text()
    assert "retrax_layer_norm" not in text
    np.testing.assert_array_equal(np.asarray(ops.layer_norm(norm, x)), np.asarray(norm(x)))


@pytest.mark.parametrize("features", [(32, 48), (48, 32)], ids=["narrow-input", "wide-input"])
@pytest.mark.parametrize("rows", [(2, cpu_dense.MIN_ROWS // 2), (cpu_dense.MIN_ROWS - 2,)], ids=["halves", "one-product"])
def test_dense_layer_and_its_gradients_match_torch(features, rows):
  """nnx.Linear with `cpu_dense.dot_general`: y, ∂x, ∂W and ∂b against torch.nn.Linear's autograd;
  from MIN_ROWS rows on one CPU device ∂W is contracted as two halves, below it as one product."""
  if not one_cpu_device():
    pytest.skip("cpu_dense splits on one XLA:CPU device")
  (k, n), rng = features, np.random.default_rng(0)
  x = rng.standard_normal((*rows, k)).astype(np.float32)
  dy = rng.standard_normal((*rows, n)).astype(np.float32)
  layer = nnx.Linear(k, n, dot_general=cpu_dense.dot_general, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(layer)

  def run(params, x, dy):
    y, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    dparams, dx = pullback(dy)
    return y, dx, dparams["kernel"][...], dparams["bias"][...]

  jaxpr = str(jax.make_jaxpr(run)(params, x, dy))
  assert ("(([1], [1]), ([0], [0]))" in jaxpr) == (rows[0] == 2), jaxpr  # the halves' batched product
  linear = torch.nn.Linear(k, n)
  with torch.no_grad():
    linear.weight.copy_(torch.tensor(np.asarray(layer.kernel[...]).T))
    linear.bias.copy_(torch.tensor(np.asarray(layer.bias[...])))
  tx = torch.tensor(x, requires_grad=True)
  ty = linear(tx)
  ty.backward(torch.tensor(dy))
  theirs = [ty.detach().numpy(), tx.grad.numpy(), linear.weight.grad.numpy().T, linear.bias.grad.numpy()]
  for ours, reference in zip(ops.jit(run)(params, x, dy), theirs):
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_the_kernels_run_where_they_pay_off(monkeypatch):
  """Unset, RETRAX_CPU_KERNELS follows the CPU: AVX-512 runs the kernels, AVX2 alone XLA's ops;
  1 and 0 force them on and off."""
  from retrax.xla_cpu import build, kernels
  monkeypatch.delenv("RETRAX_CPU_KERNELS", raising=False)
  for flags, expected in (("flags : fpu avx2 avx512f avx512bw", True), ("flags : fpu avx2 fma", False)):
    monkeypatch.setattr(build, "cpu_flags", lambda flags=flags: flags)
    assert kernels.pay_off() is expected
    for switch in ("1", "0"):
      monkeypatch.setenv("RETRAX_CPU_KERNELS", switch)
      assert kernels.pay_off() is (switch == "1")
    monkeypatch.delenv("RETRAX_CPU_KERNELS")
