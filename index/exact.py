"""Exact maximum-inner-product search in JAX, tiled so no [m, n] score matrix is ever held.

The documents sit on the device as [num_tiles, tile, d] (the last tile padded with zero rows
whose scores are masked to -inf). Queries go through in fixed blocks of `query_block` rows
(the last block padded with zeros); for each block a jitted `lax.scan` over the document
tiles keeps a running top-k (tiled.py). Every call has the same shapes, so the search compiles once per
(query block, tile, k, number of tiles, d) and never per call or per number of queries.
"""
import jax
import jax.numpy as jnp
import numpy as np

from .tiled import top_k_over_tiles


def check_finite(vectors: np.ndarray, what: str) -> None:
  """ValueError naming how many rows hold NaN or inf (they would rank as garbage, silently)."""
  bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
  if len(bad):
    raise ValueError(f"{len(bad)} of the {len(vectors)} {what} are not finite (rows {bad[:5].tolist()}"
                     f"{' …' if len(bad) > 5 else ''})")


def inner_products(queries, docs):
  """s[i, j] = ⟨q_i, x_j⟩ in full float32 precision: queries [b, d], docs [tile, d] → [b, tile]."""
  return jnp.dot(queries, docs.T, precision=jax.lax.Precision.HIGHEST)


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
      block_scores, block_indices = top_k_over_tiles(inner_products, padded[rows], self._tiles, self.num_vectors, k)
      scores[rows], indices[rows] = np.asarray(block_scores), np.asarray(block_indices)
    return indices[:m], scores[:m]
