"""Inverted dropout for training (Srivastava et al., 2014): y = x ⊙ m / (1 − p), m ~ Bernoulli(1 − p).

A `Dropout` serves one forward pass: the n-th site that draws (in trace order) uses
k = fold_in(key, n), so the masks are a pure function of the step's key. The bits are a keyed
counter hash, h(c) = g(g(c ⊕ k₀) ⊕ k₁) with g Wellons' lowbias32 mixer and c an element's
row-major index: elementwise, so every mesh computes the same masks, and 6× cheaper on CPU than
threefry's 20 rounds (which cost 0.25 s for one [64, 12, 256, 256] attention mask). Uniforms are
16-bit, two per 32-bit word: an element is dropped iff u < round(p · 2¹⁶), a rate exact to 2⁻¹⁶.
`rate` overrides every rate the backbone's config sets (config.model.dropout); None keeps them.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def check_rates(hf_config: dict, names) -> None:
  """A config.json's dropout rates each lie in [0, 1) (ValueError naming the field otherwise)."""
  for name in names:
    if not 0 <= hf_config.get(name, 0) < 1:
      raise ValueError(f"{name} {hf_config[name]!r}: expected 0 ≤ rate < 1")


class Dropout:

  def __init__(self, key: jax.Array | None, rate: float | None = None):
    self.key, self.rate, self.sites = key, rate, 0

  @classmethod
  def off(cls) -> "Dropout":
    return cls(None)

  def mask(self, shape, configured_rate: float, rows=None) -> "Drawn | None":
    """This site's mask of `shape`, or None where dropout is off.

    rows [shape[0]] (optional): each leading row's row-major position in a padded layout."""
    p = configured_rate if self.rate is None else self.rate
    if self.key is None or p == 0:
      return None
    if np.prod(shape, dtype=np.int64) > 2 ** 32:
      raise ValueError(f"dropout mask {shape}: more than 2³² elements")
    key = jax.random.fold_in(self.key, self.sites)
    self.sites += 1
    return Drawn(key, tuple(shape), rows, round(p * 2 ** 16), 1 / (1 - p))

  def __call__(self, x, configured_rate: float, rows=None):
    drawn = self.mask(x.shape, configured_rate, rows)
    return x if drawn is None else x * drawn.multiplier(x.dtype)


class Drawn(NamedTuple):
  """One site's mask, computed where it is used: an element is kept iff its 16-bit uniform
  u ≥ threshold = round(p · 2¹⁶), u the low then high half of each word of `hashed_bits` over
  (…, L / 2) when the last dimension L is even, else each word's high half; scale = 1 / (1 − p)."""
  key: jax.Array
  shape: tuple
  rows: jax.Array | None
  threshold: int
  scale: float

  def keep(self) -> jax.Array:
    """The boolean keep mask of `shape`."""
    if self.shape[-1] % 2:
      u = hashed_bits(self.key, self.shape, self.rows) >> 16
    else:
      words = hashed_bits(self.key, (*self.shape[:-1], self.shape[-1] // 2), self.rows)
      u = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(self.shape)
    return u >= self.threshold

  def multiplier(self, dtype=jnp.float32) -> jax.Array:
    return multiplier(self.keep(), self.scale, dtype)


def multiplier(keep, scale: float, dtype=jnp.float32) -> jax.Array:
  """m / (1 − p) from a keep mask and its scale 1 / (1 − p): scale where kept, 0 where dropped."""
  return jnp.where(keep, np.float32(scale), np.float32(0)).astype(dtype)


def _lowbias32(x):
  """Wellons' 32-bit integer mixer (xorshift-multiply, bias ≈ 0.17)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hashed_bits(key: jax.Array, shape, rows=None) -> jax.Array:
  """uint32 words of `shape`: h(c) = g(g(c ⊕ k₀) ⊕ k₁), c the row-major index of each element,
  or, given rows [shape[0]], c = rows[i]·∏shape[1:] + the index within row i (c wraps past 2³²
  elements, which `Dropout.mask` refuses)."""
  words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
  if rows is None:
    index, first = jnp.zeros(shape, jnp.uint32), 0
  else:
    index, first = jax.lax.broadcast_in_dim(rows.astype(jnp.uint32), shape, (0,)), 1
  for axis in range(first, len(shape)):
    index = index * jnp.uint32(shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
  return _lowbias32(_lowbias32(index ^ words[0]) ^ words[1])
