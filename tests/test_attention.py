"""Attention and its written-out backward against torch's autograd: XLA's ops, the fused CPU kernel
(`retrax.xla_cpu.attention`) and, on GPU, cuDNN."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from retrax.models.backbones import unpadding
from retrax.ops import attention
from retrax import xla_cpu
from retrax.xla_cpu import attention as cpu_attention
from retrax.models.dropout import Dropout


def torch_reference(q, k, v, mask, do, keep=None):
  """softmax(q kᵀ/√d, masked by mask [B, Lq or 1, Lk]) ⊙ keep, times v, in float32, and the
  gradients of Σ out ⊙ do with respect to q, k, v; [B, L, heads, d] layout."""
  t = [torch.tensor(np.asarray(x, np.float32)).transpose(1, 2).requires_grad_() for x in (q, k, v)]
  scores = t[0] @ t[1].transpose(-1, -2) / np.sqrt(q.shape[-1])
  p = torch.softmax(scores.masked_fill(~torch.tensor(np.asarray(mask))[:, None], -torch.inf), -1)
  if keep is not None:
    p = p * torch.tensor(np.asarray(keep))
  out = p @ t[2]
  out.backward(torch.tensor(np.asarray(do, np.float32)).transpose(1, 2))
  return [x.detach().transpose(1, 2).numpy() for x in (out, *(y.grad for y in t))]


def _inputs(b, l, heads, d, dtype):
  q, k, v, do = (jax.random.normal(jax.random.key(i), (b, l, heads, d), dtype) for i in range(4))
  lengths = np.array([l, l - 5, 3, l // 2][:b], np.int32)
  return q, k, v, do, lengths, jnp.asarray(np.arange(l)[None, None, :] < lengths[:, None, None])


def _run(q, k, v, do, mask, dropped=None, lengths=None):
  def loss(q, k, v):
    return (attention(q, k, v, mask, dropped, lengths=lengths).astype(jnp.float32) * do).sum()
  grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  out = jax.jit(lambda q, k, v: attention(q, k, v, mask, dropped, lengths=lengths))(q, k, v)
  return out, grads(q, k, v)[1], grads


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_attention_and_its_backward_match_torch(dropout):
  q, k, v, do, lengths, mask = _inputs(4, 24, 3, 8, jnp.float32)  # head dim 8: XLA's ops
  dropped = Dropout(jax.random.key(7)).mask((4, 3, 24, 24), 0.25) if dropout else None
  keep = None if dropped is None else np.asarray(dropped.multiplier())
  out, grads, _ = _run(q, k, v, do, mask, dropped)
  for ours, theirs in zip((out, *grads), torch_reference(q, k, v, mask, do, keep)):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-6 * np.abs(theirs).max())


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_padded_bfloat16_attention_runs_cudnn_and_matches_torch():
  q, k, v, do, lengths, mask = _inputs(4, 128, 12, 64, jnp.bfloat16)
  out, grads, compiled = _run(q, k, v, do, mask, lengths=jnp.asarray(lengths))
  assert "cudnn" in compiled.lower(q, k, v).compile().as_text()
  for ours, theirs in zip((out, *grads), torch_reference(q, k, v, mask, do)):
    ours = np.asarray(ours, np.float32)
    assert np.abs(ours - theirs).max() <= 2e-2 * np.abs(theirs).max(), np.abs(ours - theirs).max()


def _runs_fused_kernel(grads, q, k, v) -> bool:
  text = grads.lower(q, k, v).compile().as_text()
  return "retrax_attention_forward" in text and "retrax_attention_backward" in text


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("d, l, window", [(16, 37, None), (32, 40, None), (64, 37, 4)],
                         ids=["d16-odd-length", "d32-even-length", "d64-local-window"])
def test_fused_cpu_attention_and_its_backward_match_torch(cpu_kernels, dropout, d, l, window):
  """Lengths that leave a partial 16-lane tail; dropout's hash pairs elements when l is even. The
  products stop after each batch row's last attended key (3 of 37 keys in one row)."""
  q, k, v, do, lengths, mask = _inputs(4, l, 3, d, jnp.float32)
  if window:  # a per-query mask [B, L, L], as ModernBERT's local layers give, with right padding
    i = np.minimum(np.arange(l)[None, :, None], lengths[:, None, None] - 1)  # padding queries as the last real one
    j = np.arange(l)[None, None, :]
    mask = jnp.asarray((np.abs(i - j) <= window) & (j < lengths[:, None, None]))
  dropped = Dropout(jax.random.key(7)).mask((4, 3, l, l), 0.25) if dropout else None
  keep = None if dropped is None else np.asarray(dropped.multiplier())
  out, grads, compiled = _run(q, k, v, do, mask, dropped)
  assert _runs_fused_kernel(compiled, q, k, v)
  for ours, theirs in zip((out, *grads), torch_reference(q, k, v, mask, do, keep)):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_fused_cpu_attention_on_packed_tokens_matches_torch(cpu_kernels, dropout):
  """Right-padded rows packed end to end, then 3 slack rows (`unpadding.Unpadded`'s layout), with
  garbage in the slack: the real tokens' outputs and gradients are torch's on the padded rows
  (whose padding queries take no gradient here, as they are absent); slack rows come out 0."""
  b, l, heads, d = 4, 37, 3, 16
  q, k, v, do, lengths, mask = _inputs(b, l, heads, d, jnp.float32)
  real = np.asarray(mask[:, 0])
  count = int(real.sum())
  layout = unpadding.layout(jnp.asarray(real), count + 3)
  pack = lambda x: layout.to_tokens(x).at[count:].set(7.0)
  dropped = Dropout(jax.random.key(7)).mask((b, heads, l, l), 0.25) if dropout else None
  keep = None if dropped is None else np.asarray(dropped.multiplier())
  attend = lambda q, k, v: cpu_attention.packed_attention(q, k, v, mask, layout.starts, jnp.asarray(lengths), dropped)
  grads = jax.jit(jax.grad(lambda q, k, v: (attend(q, k, v) * pack(do)).sum(), argnums=(0, 1, 2)))
  tokens = [pack(x) for x in (q, k, v)]
  out, packed_grads = jax.jit(attend)(*tokens), grads(*tokens)
  assert _runs_fused_kernel(grads, *tokens)
  expected = torch_reference(q, k, v, mask, do * real[:, :, None, None], keep)
  for ours, theirs in zip((out, *packed_grads), expected):
    ours = np.asarray(ours)
    np.testing.assert_allclose(ours[:count], theirs[real.astype(bool)], rtol=0, atol=2e-6 * np.abs(theirs).max())
    assert not ours[count:].any()


def test_fused_cpu_attention_treats_a_row_without_keys_as_xlas_ops_do(cpu_kernels, monkeypatch):
  """A row whose keys are all masked attends uniformly (Hugging Face's additive mask does too)."""
  q, k, v, do, _, _ = _inputs(2, 20, 2, 16, jnp.float32)
  mask = jnp.asarray(np.arange(20)[None, None, :] < np.array([20, 0])[:, None, None])
  fused = _run(q, k, v, do, mask)
  monkeypatch.setattr(xla_cpu, "attention_applies", lambda *args: False)
  xla = _run(q, k, v, do, mask)
  assert _runs_fused_kernel(fused[2], q, k, v) and not _runs_fused_kernel(xla[2], q, k, v)
  np.testing.assert_allclose(np.asarray(fused[0][1]), np.broadcast_to(np.asarray(v[1]).mean(0), (20, 2, 16)),
                             rtol=0, atol=1e-6)
  for ours, theirs in zip((fused[0], *fused[1]), (xla[0], *xla[1])):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=2e-6 * np.abs(theirs).max())
