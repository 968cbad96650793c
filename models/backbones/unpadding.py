"""Unpadding: per-token layers run on the real tokens only, attention on the padded [B, L] layout.

A batch [B, L] holding n real tokens is packed into `capacity` ≥ n rows (a static size, so each
capacity compiles once). Packing and unpacking are both gathers:
  tokens[t] = x[pack_index[t]],   pack_index = flat positions of the real tokens (then B·L)
  x[i]      = tokens[unpack_index[i]],   unpack_index = packed row of position i (capacity if padding)
where index B·L, respectively capacity, reads an appended row of zeros.
"""
import jax.numpy as jnp
import numpy as np

CAPACITY_FRACTIONS = (0.25, 0.5, 0.75)


def token_capacity(attention_mask: np.ndarray) -> int | None:
  """The smallest of B·L·{1/4, 1/2, 3/4} that holds the batch's real tokens, or None (run padded).

  Below 3/4 full the per-token layers save at least a quarter of their work, which outweighs
  the gathers around each attention block.
  """
  total, real = attention_mask.size, int(attention_mask.sum())
  return next((int(total * f) for f in CAPACITY_FRACTIONS if real <= int(total * f)), None)


def _gather_rows(x, index):
  """x[index] over the leading axis, index len(x) reading a row of zeros."""
  return jnp.concatenate([x, jnp.zeros_like(x[:1])])[index]


class Padded:
  """The identity layout: every layer sees [B, L, ...]."""

  def to_tokens(self, x):
    return x

  def to_padded(self, x):
    return x


class Unpadded:
  """Tokens [capacity, ...] between attention blocks; `to_padded` restores [B, L, ...]."""

  def __init__(self, attention_mask, capacity: int):
    flat = attention_mask.reshape(-1).astype(bool)
    self.shape = attention_mask.shape
    self.pack_index = jnp.nonzero(flat, size=capacity, fill_value=flat.size)[0]
    self.unpack_index = jnp.where(flat, jnp.cumsum(flat) - 1, capacity)

  def to_tokens(self, x):
    return _gather_rows(x.reshape(-1, *x.shape[2:]), self.pack_index)

  def to_padded(self, x):
    return _gather_rows(x, self.unpack_index).reshape(*self.shape, *x.shape[1:])


def layout(attention_mask, capacity: int | None):
  return Padded() if capacity is None else Unpadded(attention_mask, capacity)
