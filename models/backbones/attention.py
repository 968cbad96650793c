"""Scaled dot-product attention shared by the encoder backbones, with its backward written out.

  s = (q / √d) kᵀ + b,   b = 0 where mask else the lowest float32,   e = exp(s − max s),
  l = Σ_k e,   o = ((e ⊙ m) v) / l,   m the dropout multiplier (kept / (1 − rate); 1 without).

Normalising the [L, d] output rather than the [L, L] probabilities p = e / l saves a pass over
the scores (on XLA:CPU MiniLM encodes 16% faster than through jax.nn.softmax). The backward keeps
e (in the compute dtype), l, o and the boolean dropout mask, and folds 1 / l into [L, d] rows
(FlashAttention's identity Σ_k p ∂p = Σ_d ∂o ⊙ o = r holds with dropout):
  ∂v = (e ⊙ m)ᵀ (∂o / l),   ∂s = e ⊙ (m ⊙ ((∂o / l) vᵀ) − r / l),   ∂q = ∂s k / √d,   ∂k = ∂sᵀ (q / √d).

On GPU, in bfloat16 or float16 and without attention-probability dropout, a right-padded mask
(given as `lengths`) goes through cuDNN's fused flash attention (`jax.nn.dot_product_attention`).
On one CPU device in float32, `cpu_attention`'s fused kernel runs it, on packed token rows too
(`token_attention`); the ops below are its fallback and reference.
"""
import functools

import jax
import jax.numpy as jnp

from . import cpu_attention
from ..dropout import multiplier


def _heads_first(t):
  return t.transpose(0, 2, 1, 3)


def _dropped(x, kept, scale):
  return x if kept is None else x * multiplier(kept, scale, x.dtype)


def _forward(q, k, v, bias, kept, scale):
  """q (scaled), k, v [B, heads, L, d] → (o in v's dtype, e in v's dtype, l float32 [B, heads, Lq, 1])."""
  s = (q @ k.swapaxes(-1, -2)).astype(jnp.float32) + bias
  e = jnp.exp(s - s.max(-1, keepdims=True))
  l = e.sum(-1, keepdims=True)
  o = (_dropped(e, kept, scale).astype(v.dtype) @ v).astype(jnp.float32) / l
  return o.astype(v.dtype), e.astype(v.dtype), l


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, bias, kept, scale):
  return _forward(q, k, v, bias, kept, scale)[0]


def _attention_fwd(q, k, v, bias, kept, scale):
  o, e, l = _forward(q, k, v, bias, kept, scale)
  return o, (q, k, v, kept, e, l, o)


def _attention_bwd(scale, residuals, do):
  q, k, v, kept, e, l, o = residuals
  do_l = (do.astype(jnp.float32) / l).astype(v.dtype)
  rows = (do.astype(jnp.float32) * o.astype(jnp.float32)).sum(-1, keepdims=True) / l
  dv = _dropped(e, kept, scale).swapaxes(-1, -2) @ do_l
  dp = _dropped((do_l @ v.swapaxes(-1, -2)).astype(jnp.float32), kept, scale)
  ds = (e.astype(jnp.float32) * (dp - rows)).astype(q.dtype)
  return ds @ k, ds.swapaxes(-1, -2) @ q, dv, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def _cudnn_applies(q, dropped, lengths) -> bool:
  head_dim = q.shape[-1]
  return (lengths is not None and dropped is None and jax.default_backend() == "gpu"
          and q.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128)


def attention(q, k, v, mask, dropped=None, *, lengths=None):
  """q, k, v [B, L, heads, d]; mask [B, Lq or 1, Lk] (bool); dropped: `Dropout.mask`'s `Drawn`
  of shape [B, heads, Lq, Lk], or None; lengths [B]: each row's real tokens when
  `mask` is right padding alone (keys j < lengths), which lets cuDNN run it. Returns
  [B, L, heads, d] in v's dtype."""
  if _cudnn_applies(q, dropped, lengths):
    lengths = jnp.maximum(lengths.astype(jnp.int32), 1)  # an all-padding row attends to its first key
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
  if cpu_attention.applies(q, mask, dropped):
    return cpu_attention.attention(q, k, v, mask, dropped)
  q = q * jnp.asarray(1 / jnp.sqrt(q.shape[-1]), q.dtype)
  bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None]
  kept, scale = (dropped.keep(), dropped.scale) if dropped is not None else (None, 1.0)
  return _heads_first(_attention(*map(_heads_first, (q, k, v)), bias, kept, scale))


def token_attention(q, k, v, mask, lengths, layout, dropped=None):
  """Self-attention of `layout`'s token rows (`unpadding.Padded` or `Unpadded`): q, k, v [N, heads, d]
  → [N, heads, d]. mask [B, L or 1, L], lengths [B] (or None) and `dropped` as in `attention`. A
  packed layout (right padding; `Unpadded.starts`) runs `cpu_attention` on the tokens where they
  lie, when it applies; otherwise the tokens go to the padded [B, L] layout and back."""
  if layout.starts is not None and cpu_attention.applies(q, mask, dropped):
    return cpu_attention.packed_attention(q, k, v, mask, layout.starts, layout.lengths, dropped)
  padded = (layout.to_padded(t) for t in (q, k, v))
  return layout.to_tokens(attention(*padded, mask, dropped, lengths=lengths))
