"""Exact maximum-inner-product search in JAX, tiled so no [m, n] score matrix is ever held.

The documents sit on the device as [num_tiles, tile, d] (the last tile padded with zero rows
whose scores are masked to -inf). Queries go through in fixed blocks of `query_block` rows
(the last block padded with zeros); for each block a jitted `lax.scan` over the document
tiles keeps a running top-k. Every call has the same shapes, so the search compiles once per
(query block, tile, k, number of tiles, d) and never per call or per number of queries.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_finite(vectors: np.ndarray, what: str) -> None:
  """ValueError naming how many rows hold NaN or inf (they would rank as garbage, silently)."""
  bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
  if len(bad):
    raise ValueError(f"{len(bad)} of the {len(vectors)} {what} are not finite (rows {bad[:5].tolist()}"
                     f"{' …' if len(bad) > 5 else ''})")


@functools.partial(jax.jit, static_argnames=("k",))
def search_block(queries, tiles, num_docs, k):
  """Top-k of s[i, j] = ⟨q_i, x_j⟩ over the tiles; ties go to the lower document index.

  queries [b, d], tiles [t, tile, d] → (scores [b, k] float32 descending, indices [b, k] int32).
  Per tile: top_k(concat(best so far, tile scores)); lax.top_k puts the lower position first
  on ties, and the running best always holds lower indices than the tile, so ties resolve
  by document index.
  """
  b, tile = queries.shape[0], tiles.shape[1]
  init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.zeros((b, k), jnp.int32))

  def step(best, xs):
    docs, offset = xs
    ids = offset + jnp.arange(tile, dtype=jnp.int32)
    scores = jnp.dot(queries, docs.T, precision=jax.lax.Precision.HIGHEST)
    scores = jnp.where(ids < num_docs, scores, -jnp.inf)
    merged = jnp.concatenate([best[0], scores], axis=1)
    merged_ids = jnp.concatenate([best[1], jnp.broadcast_to(ids, (b, tile))], axis=1)
    top, pos = jax.lax.top_k(merged, k)
    return (top, jnp.take_along_axis(merged_ids, pos, axis=1)), None

  offsets = jnp.arange(tiles.shape[0], dtype=jnp.int32) * tile
  (scores, indices), _ = jax.lax.scan(step, init, (tiles, offsets))
  return scores, indices


class ExactIndex:
  """Brute-force maximum inner product search; the recall reference for ScaNN.

  Memory: the documents, ⌈n / tile⌉·tile·d float32 on the device, plus per query block
  O(query_block · (tile + k)) for the tile's scores and the merge buffer: with the defaults
  (tile 4096, query_block 128, k ≤ 1000) about 10 MB, whatever n and m are. A 1M × 384
  corpus therefore needs ~1.5 GB for itself and ~10 MB of working memory, never the
  m × n × 4 bytes of a full score matrix.
  """

  def __init__(self, embeddings: np.ndarray, tile: int = 4096, query_block: int = 128):
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
      raise ValueError(f"expected embeddings of shape [n > 0, d], got {embeddings.shape}")
    check_finite(embeddings, "embeddings")
    self.num_vectors, self.dimension = embeddings.shape
    self.tile = min(tile, self.num_vectors)
    self.query_block = query_block
    num_tiles = -(-self.num_vectors // self.tile)
    padded = np.zeros((num_tiles * self.tile, self.dimension), np.float32)
    padded[:self.num_vectors] = embeddings
    self._tiles = jnp.asarray(padded.reshape(num_tiles, self.tile, self.dimension))

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [m, k], scores float32 [m, k]), best first; 1 ≤ k ≤ n."""
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dimension:
      raise ValueError(f"expected queries of shape [m, {self.dimension}], got {queries.shape}")
    check_finite(queries, "queries")
    if not 1 <= k <= self.num_vectors:
      raise ValueError(f"k must be between 1 and the number of vectors ({self.num_vectors}), got {k}")
    m = queries.shape[0]
    blocks = -(-m // self.query_block)
    padded = np.zeros((blocks * self.query_block, self.dimension), np.float32)
    padded[:m] = queries
    scores = np.zeros((blocks * self.query_block, k), np.float32)
    indices = np.zeros((blocks * self.query_block, k), np.int64)
    for start in range(0, len(padded), self.query_block):
      rows = slice(start, start + self.query_block)
      block_scores, block_indices = search_block(padded[rows], self._tiles, self.num_vectors, k)
      scores[rows], indices[rows] = np.asarray(block_scores), np.asarray(block_indices)
    return indices[:m], scores[:m]
