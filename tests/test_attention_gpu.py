"""On GPU, bfloat16 attention over right padding runs cuDNN's fused kernel and matches torch's SDPA."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retrax.models.attention import attention

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")


def torch_reference(q, k, v, lengths, do):
  """torch's float32 scaled_dot_product_attention and its gradients, [B, L, heads, d] layout."""
  import torch
  t = [torch.tensor(np.asarray(x, np.float32)).transpose(1, 2).requires_grad_() for x in (q, k, v)]
  mask = torch.arange(q.shape[1])[None, :] < torch.tensor(lengths)[:, None]
  out = torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=mask[:, None, None, :])
  out.backward(torch.tensor(np.asarray(do, np.float32)).transpose(1, 2))
  return [x.detach().transpose(1, 2).numpy() for x in (out, *(y.grad for y in t))]


def test_padded_bfloat16_attention_runs_cudnn_and_matches_torch():
  b, l, heads, d = 4, 128, 12, 64
  q, k, v, do = (jax.random.normal(jax.random.key(i), (b, l, heads, d), jnp.bfloat16) for i in range(4))
  lengths = np.array([128, 77, 5, 64], np.int32)
  mask = jnp.asarray(np.arange(l)[None, None, :] < lengths[:, None, None])

  def loss(q, k, v):
    return (attention(q, k, v, mask, lengths=jnp.asarray(lengths)).astype(jnp.float32) * do).sum()

  grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  assert "cudnn" in grads.lower(q, k, v).compile().as_text()
  out = jax.jit(lambda q, k, v: attention(q, k, v, mask, lengths=jnp.asarray(lengths)))(q, k, v)
  expected = torch_reference(q, k, v, lengths, do)
  for ours, theirs in zip((out, *grads(q, k, v)[1]), expected):
    ours = np.asarray(ours, np.float32)
    assert np.abs(ours - theirs).max() <= 2e-2 * np.abs(theirs).max(), np.abs(ours - theirs).max()
