"""Fused float32 attention on XLA:CPU: `attention.cc` (`kernels`), forward and backward.

XLA:CPU runs attention as separate batched dots, transposes and softmax passes; this kernel does
one (batch, head) pair per task in cache, on the token rows the projections give, padded or
packed (`models/backbones/unpadding.py`, so no gathers around it; the formulas are in the .cc file). Where
it does not apply, `retrax.ops` runs XLA's ops (`models/backbones/attention.py`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels

_FORWARD, _BACKWARD = "retrax_attention_forward", "retrax_attention_backward"


def applies(q, mask, dropped) -> bool:
  """float32 on one CPU device, a head dimension that is a multiple of 16, a padded-layout dropout
  mask (if any), and the kernel built."""
  return mask.dtype == jnp.bool_ and (dropped is None or dropped.rows is None) and kernels.applies(q)


def _attrs(q, threshold, keep_scale):
  return dict(scale=np.float32(1 / np.sqrt(q.shape[-1])), threshold=np.int64(threshold),
              keep_scale=np.float32(keep_scale))


def _forward(q, k, v, mask, start, count, key, threshold, keep_scale):
  b, heads, l = mask.shape[0], q.shape[1], mask.shape[-1]
  out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, heads, l), jnp.float32))
  return jax.ffi.ffi_call(_FORWARD, out)(q, k, v, mask, start, count, key, **_attrs(q, threshold, keep_scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _attention(q, k, v, mask, start, count, key, threshold, keep_scale):
  return _forward(q, k, v, mask, start, count, key, threshold, keep_scale)[0]


def _attention_fwd(q, k, v, mask, start, count, key, threshold, keep_scale):
  o, lse = _forward(q, k, v, mask, start, count, key, threshold, keep_scale)
  return o, (q, k, v, mask, start, count, key, o, lse)


def _attention_bwd(threshold, keep_scale, residuals, do):
  q, k, v, mask, start, count, key, o, lse = residuals
  out = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call(_BACKWARD, out)(q, k, v, mask, start, count, key, o, lse, do,
                                                **_attrs(q, threshold, keep_scale))
  return dq, dk, dv, None, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def packed_attention(q, k, v, mask, start, count, dropped=None):
  """Self-attention of B rows of L positions on token rows q, k, v [T, heads, d] float32: position
  i < count[b] of batch row b is token row start[b] + i (right padding: the rest are padding and
  absent). mask [B, L or 1, L] bool; dropped: `Dropout.mask`'s `Drawn` of shape [B, heads, L, L]
  (drawn in the kernel, never materialised), or None. Returns [T, heads, d], 0 in rows of no batch row."""
  b, heads, l = mask.shape[0], q.shape[1], mask.shape[-1]
  start, count = start.astype(jnp.int32), count.astype(jnp.int32)
  if dropped is None:
    return _attention(q, k, v, mask, start, count, jnp.zeros((2,), jnp.uint32), 0, 0.0)
  if dropped.shape != (b, heads, l, l):
    raise ValueError(f"attention dropout mask {dropped.shape}: expected {(b, heads, l, l)}")
  key = jax.random.key_data(dropped.key).reshape(-1)[:2].astype(jnp.uint32)
  return _attention(q, k, v, mask, start, count, key, dropped.threshold, float(dropped.scale))


def attention(q, k, v, mask, dropped=None):
  """`packed_attention` of the padded layout: q, k, v [B, L, heads, d] float32, every position
  computed. Returns [B, L, heads, d]."""
  b, l = q.shape[:2]
  tokens = lambda t: t.reshape(b * l, *t.shape[2:])
  start, count = jnp.arange(b, dtype=jnp.int32) * l, jnp.full((b,), l, jnp.int32)
  return packed_attention(tokens(q), tokens(k), tokens(v), mask, start, count, dropped).reshape(q.shape)
