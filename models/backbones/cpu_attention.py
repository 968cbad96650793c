"""Fused float32 attention on XLA:CPU: `cpu_attention.cc` (`cpu_kernels`), forward and backward.

XLA:CPU runs attention as separate batched dots, transposes and softmax passes; this kernel does
one (batch, head) pair per task in cache, on the [B, L, heads, d] layout the projections give
(the formulas are in the .cc file). Where it does not apply, `attention.py`'s XLA path runs.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import cpu_kernels

_FORWARD, _BACKWARD = "retrax_attention_forward", "retrax_attention_backward"


def applies(q, mask, dropped) -> bool:
  """float32 on one CPU device, a head dimension that is a multiple of 16, a padded-layout dropout
  mask (if any), and the kernel built."""
  return mask.dtype == jnp.bool_ and (dropped is None or dropped.rows is None) and cpu_kernels.applies(q)


def _attrs(q, threshold, keep_scale):
  return dict(scale=np.float32(1 / np.sqrt(q.shape[-1])), threshold=np.int64(threshold),
              keep_scale=np.float32(keep_scale))


def _forward(q, k, v, mask, key, threshold, keep_scale):
  b, l, heads, _ = q.shape
  out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, heads, l), jnp.float32))
  return jax.ffi.ffi_call(_FORWARD, out)(q, k, v, mask, key, **_attrs(q, threshold, keep_scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, mask, key, threshold, keep_scale):
  return _forward(q, k, v, mask, key, threshold, keep_scale)[0]


def _attention_fwd(q, k, v, mask, key, threshold, keep_scale):
  o, lse = _forward(q, k, v, mask, key, threshold, keep_scale)
  return o, (q, k, v, mask, key, o, lse)


def _attention_bwd(threshold, keep_scale, residuals, do):
  q, k, v, mask, key, o, lse = residuals
  out = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call(_BACKWARD, out)(q, k, v, mask, key, o, lse, do,
                                                **_attrs(q, threshold, keep_scale))
  return dq, dk, dv, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q, k, v, mask, dropped=None):
  """q, k, v [B, L, heads, d] float32; mask [B, Lq or 1, Lk] bool; dropped: `Dropout.mask`'s
  `Drawn` of shape [B, heads, Lq, Lk] (drawn in the kernel, never materialised), or None.
  Returns [B, L, heads, d]."""
  if dropped is None:
    return _attention(q, k, v, mask, jnp.zeros((2,), jnp.uint32), 0, 0.0)
  b, lq, heads, _ = q.shape
  if dropped.shape != (b, heads, lq, k.shape[1]):
    raise ValueError(f"attention dropout mask {dropped.shape}: expected {(b, heads, lq, k.shape[1])}")
  key = jax.random.key_data(dropped.key).reshape(-1)[:2].astype(jnp.uint32)
  return _attention(q, k, v, mask, key, dropped.threshold, float(dropped.scale))
