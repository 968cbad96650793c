"""Scaled dot-product attention shared by the encoder backbones, with its backward written out.

  s = (q / √d) kᵀ + b,   b = 0 where mask else the lowest float32,   e = exp(s − max s),
  l = Σ_k e,   o = ((e ⊙ m) v) / l,   m the dropout multiplier (kept / (1 − rate); 1 without).

Normalising the [L, d] output rather than the [L, L] probabilities p = e / l saves a pass over
the scores (on XLA:CPU MiniLM encodes 16% faster than through jax.nn.softmax). The backward keeps
e (in the compute dtype), l, o and the boolean dropout mask, and folds 1 / l into [L, d] rows
(FlashAttention's identity Σ_k p ∂p = Σ_d ∂o ⊙ o = r holds with dropout):
  ∂v = (e ⊙ m)ᵀ (∂o / l),   ∂s = e ⊙ (m ⊙ ((∂o / l) vᵀ) − r / l),   ∂q = ∂s k / √d,   ∂k = ∂sᵀ (q / √d).

These are XLA's ops, the reference and fallback of the fused implementations that `retrax.ops`
chooses by backend (cuDNN's on GPU, retrax's kernel on XLA:CPU).
"""
import functools

import jax
import jax.numpy as jnp

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


def attention(q, k, v, mask, dropped=None):
  """q, k, v [B, L, heads, d]; mask [B, Lq or 1, Lk] (bool); dropped: `Dropout.mask`'s `Drawn`
  of shape [B, heads, Lq, Lk], or None. Returns [B, L, heads, d] in v's dtype."""
  q = q * jnp.asarray(1 / jnp.sqrt(q.shape[-1]), q.dtype)
  bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None]
  kept, scale = (dropped.keep(), dropped.scale) if dropped is not None else (None, 1.0)
  return _heads_first(_attention(*map(_heads_first, (q, k, v)), bias, kept, scale))
