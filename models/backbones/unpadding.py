"""Unpadding: per-token layers run on the real tokens only, attention on the padded [B, L] layout.

A batch [B, L] is split into n shards of B/n rows (n = 1 when encoding; in training the number
of devices the batch is split over, so that packing never moves a token between devices). Shard
s holds M = (B/n)·L positions, and its real tokens are packed into c ≥ their number rows (a
static size: each (n, c) compiles once). Packing and unpacking are both gathers, within a shard:
  tokens[s, t] = x[s, pack[s, t]],    pack[s] = the positions of shard s's real tokens, then M
  x[s, i] = tokens[s, unpack[s, i]],   unpack[s, i] = the packed row of position i, c if padding
where index M, respectively c, reads an appended row of zeros. Each gather's transpose is the
other gather (a bijection on the real tokens; padding and slack rows get zero gradients), so the
backward has no scatter.

A packing is None (padded), an int capacity (n = 1, packed on device), or a pack index [n, c]
made on the host by `pack_index`.
"""
import jax
import jax.numpy as jnp
import numpy as np

from ... import ops

GATHERED_FRACTIONS = (0.25, 0.5, 0.75)
PACKED_FRACTIONS = (0.25, 0.5, 0.75, 0.8125, 0.875, 0.9375)
PACKED_MIN_POSITIONS = 4096


def capacity_fractions(positions: int) -> tuple[float, ...]:
  """The capacities tried for a block of `positions`, as fractions of it.

  Where attention gathers the tokens to the padded layout and back, unpadding pays below 3/4 full
  (the per-token layers then save at least a quarter of their work). Where it takes the packed
  tokens as they lie (`ops.packs_in_place`: on one CPU device with retrax's kernels), only the
  embeddings and the output are gathered, and sixteenths up to 15/16 pay too, on blocks of at
  least 4096 positions, whose saving outweighs one more compilation (MiniLM training step,
  documents 93% full: 7.2 → 6.6 s; encoding 1,000 queries in buckets of ≤ 2048 positions, the
  extra compilations cost more than they saved).
  """
  packed = positions >= PACKED_MIN_POSITIONS and ops.packs_in_place()
  return PACKED_FRACTIONS if packed else GATHERED_FRACTIONS


def shard_capacity(real_tokens: int, positions: int) -> int | None:
  """The smallest of positions · `capacity_fractions(positions)` that holds `real_tokens`, or None (run padded)."""
  fractions = capacity_fractions(positions)
  return next((int(positions * f) for f in fractions if real_tokens <= int(positions * f)), None)


def token_capacity(attention_mask: np.ndarray) -> int | None:
  """`shard_capacity` of a whole batch, as one shard."""
  return shard_capacity(int(attention_mask.sum()), attention_mask.size)


def shard_tokens(attention_mask: np.ndarray, shards: int) -> np.ndarray:
  """Real tokens in each of the `shards` row blocks of a [B, L] mask."""
  return attention_mask.reshape(shards, -1).astype(bool).sum(-1)


def pack_index(attention_mask: np.ndarray, shards: int, capacity: int) -> np.ndarray:
  """pack [shards, capacity] int32: each shard's real positions in order, then M (its size)."""
  flat = attention_mask.reshape(shards, -1).astype(bool)
  out = np.full((shards, capacity), flat.shape[1], np.int32)
  for s, row in enumerate(flat):
    real = np.flatnonzero(row)
    if len(real) > capacity:
      raise ValueError(f"shard {s} holds {len(real)} real tokens, more than the capacity {capacity}")
    out[s, :len(real)] = real
  return out


def _take_rows(x, index):
  """x [n, M, ...] → [n, K, ...]: x[s, index[s, k]], index M reading a row of zeros."""
  x = jnp.concatenate([x, jnp.zeros_like(x[:, :1])], axis=1)
  index = index.reshape(*index.shape, *(1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


@jax.custom_vjp
def _regather(x, index, inverse):
  """_take_rows(x, index), whose transpose is _take_rows(·, inverse) for `inverse` index's inverse."""
  return _take_rows(x, index)


def _regather_fwd(x, index, inverse):
  return _take_rows(x, index), (index, inverse)


def _regather_bwd(residuals, g):
  index, inverse = residuals
  return _take_rows(g, inverse), None, None


_regather.defvjp(_regather_fwd, _regather_bwd)


class Padded:
  """Every token, padding included, as [B·L, ...] between attention blocks (one contraction
  dimension in each dense layer's weight gradient, which XLA:CPU runs without transposing)."""
  rows = starts = lengths = None

  def __init__(self, attention_mask):
    self.shape = attention_mask.shape

  def to_tokens(self, x):
    return x.reshape(-1, *x.shape[2:])

  def to_padded(self, x):
    return x.reshape(*self.shape, *x.shape[1:])


class Unpadded:
  """Tokens [n·c, ...] between attention blocks; `to_padded` restores [B, L, ...]. `rows` [n·c]:
  each token's row-major position in [B, L] (what dropout hashes, as in the padded layout).
  `starts` [B]: the token row of each batch row's first position; with right padding, batch row
  b's real tokens are rows starts[b] … starts[b] + lengths[b] − 1."""

  def __init__(self, attention_mask, pack):
    self.shape, self.pack = attention_mask.shape, pack
    self.shards, self.capacity = pack.shape
    flat = attention_mask.reshape(self.shards, -1).astype(bool)
    self.unpack = jnp.where(flat, jnp.cumsum(flat, axis=1, dtype=jnp.int32) - 1, self.capacity)
    shard_offsets = jnp.arange(self.shards, dtype=jnp.int32)[:, None] * self.capacity
    first = self.unpack.reshape(self.shards, -1, self.shape[1])[:, :, 0]  # the slack mark c for an empty row
    self.starts = (first + shard_offsets).reshape(-1)
    self.lengths = attention_mask.astype(bool).sum(-1, dtype=jnp.int32)
    self.rows = (pack + jnp.arange(self.shards, dtype=jnp.int32)[:, None] * flat.shape[1]).reshape(-1)

  def to_tokens(self, x):
    blocks = x.reshape(self.shards, -1, *x.shape[2:])
    return _regather(blocks, self.pack, self.unpack).reshape(-1, *x.shape[2:])

  def to_padded(self, x):
    tokens = x.reshape(self.shards, self.capacity, *x.shape[1:])
    return _regather(tokens, self.unpack, self.pack).reshape(*self.shape, *x.shape[1:])


def layout(attention_mask, packing):
  """`packing`: None, an int capacity or a pack index [n, c] (module docstring)."""
  if packing is None:
    return Padded(attention_mask)
  if isinstance(packing, int):
    flat = attention_mask.reshape(1, -1).astype(bool)
    packing = jnp.nonzero(flat[0], size=packing, fill_value=flat.shape[1])[0][None].astype(jnp.int32)
  return Unpadded(attention_mask, packing)
