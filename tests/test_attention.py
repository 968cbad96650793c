"""Attention and its written-out backward against torch's autograd; on GPU, the cuDNN path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from retrax.models.backbones.attention import attention
from retrax.models.dropout import Dropout


def torch_reference(q, k, v, lengths, do, keep=None):
  """softmax(q kᵀ/√d, masked to keys j < lengths) ⊙ keep, times v, in float32, and the gradients
  of Σ out ⊙ do with respect to q, k, v; [B, L, heads, d] layout."""
  t = [torch.tensor(np.asarray(x, np.float32)).transpose(1, 2).requires_grad_() for x in (q, k, v)]
  mask = torch.arange(k.shape[1])[None, :] < torch.tensor(lengths)[:, None]
  scores = t[0] @ t[1].transpose(-1, -2) / np.sqrt(q.shape[-1])
  p = torch.softmax(scores.masked_fill(~mask[:, None, None, :], -torch.inf), -1)
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
  q, k, v, do, lengths, mask = _inputs(4, 24, 3, 8, jnp.float32)
  dropped = Dropout(jax.random.key(7)).mask((4, 3, 24, 24), 0.25) if dropout else None
  keep = None if dropped is None else np.where(dropped[0], np.float32(dropped[1]), np.float32(0))
  out, grads, _ = _run(q, k, v, do, mask, dropped)
  for ours, theirs in zip((out, *grads), torch_reference(q, k, v, lengths, do, keep)):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-6 * np.abs(theirs).max())


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_padded_bfloat16_attention_runs_cudnn_and_matches_torch():
  q, k, v, do, lengths, mask = _inputs(4, 128, 12, 64, jnp.bfloat16)
  out, grads, compiled = _run(q, k, v, do, mask, lengths=jnp.asarray(lengths))
  assert "cudnn" in compiled.lower(q, k, v).compile().as_text()
  for ours, theirs in zip((out, *grads), torch_reference(q, k, v, lengths, do)):
    ours = np.asarray(ours, np.float32)
    assert np.abs(ours - theirs).max() <= 2e-2 * np.abs(theirs).max(), np.abs(ours - theirs).max()
