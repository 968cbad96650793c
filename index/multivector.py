"""Exhaustive late-interaction (MaxSim) search over multi-vector documents, tiled in JAX.

  s(q, d) = Σ_i max_j ⟨q_i, d_j⟩,   q = [L_q, d], d = [L_d, d] (each text's own tokens),

computed with PyLate's multiplicative masking on the padded layout: a padded document token
scores 0, a padded query token contributes 0. Documents sit on the device as
[num_tiles, tile, L, d] with their [num_tiles, tile, L] mask (L the longest document); queries go
through in blocks of `query_block` padded to the longest query. Memory per step is
query_block · tile · L_q · L float32 (16 · 256 · 32 · 180 · 4 B ≈ 94 MB with the defaults),
whatever the number of documents and queries. It is the reference the token index is measured
against.
"""
import jax.numpy as jnp
import numpy as np

from .exact import check_finite
from .tiled import top_k_over_tiles


def maxsim(queries, documents):
  """MaxSim of queries {vectors [m, Lq, d], mask [m, Lq]} against documents {[n, Ld, d], [n, Ld]} → [m, n]."""
  sim = jnp.einsum("aid,bjd->abij", queries["vectors"], documents["vectors"])
  best = (sim * documents["mask"][None, :, None, :]).max(-1)
  return (best * queries["mask"][:, None, :]).sum(-1)


def pad(items: list[np.ndarray], rows: int, what: str) -> dict[str, np.ndarray]:
  """A list of [L_i, d] arrays → {vectors [rows, max L_i, d], mask [rows, max L_i]}, zero padded."""
  if not items or any(np.ndim(x) != 2 for x in items) or len({np.shape(x)[1] for x in items}) != 1:
    raise ValueError(f"expected {what} as a non-empty list of [tokens, d] arrays of one d, got "
                     f"{sorted({np.shape(x) for x in items})[:3] if items else 'none'}")
  longest = max(max(len(x) for x in items), 1)
  vectors = np.zeros((rows, longest, items[0].shape[1]), np.float32)
  mask = np.zeros((rows, longest), bool)
  for i, x in enumerate(items):
    check_finite(np.asarray(x, np.float32), f"token vectors of {what[:-1]} {i}")
    vectors[i, :len(x)], mask[i, :len(x)] = x, True
  return {"vectors": vectors, "mask": mask}


class MaxSimIndex:
  """Exact MaxSim top-k over a list of documents' token vectors ([L_i, d] each)."""

  def __init__(self, documents: list[np.ndarray], tile: int = 256, query_block: int = 16):
    self.num_vectors = len(documents)
    self.tile = min(tile, max(self.num_vectors, 1))
    num_tiles = -(-self.num_vectors // self.tile)
    padded = pad(documents, num_tiles * self.tile, "documents")
    self.dimension = padded["vectors"].shape[-1]
    self.query_block = query_block
    self._tiles = {k: jnp.asarray(v.reshape(num_tiles, self.tile, *v.shape[1:])) for k, v in padded.items()}

  def search(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [m, k], scores float32 [m, k]), best first; 1 ≤ k ≤ n."""
    if not 1 <= k <= self.num_vectors:
      raise ValueError(f"k must be between 1 and the number of documents ({self.num_vectors}), got {k}")
    m = len(queries)
    blocks = -(-m // self.query_block)
    padded = pad(list(queries), blocks * self.query_block, "queries")
    if padded["vectors"].shape[-1] != self.dimension:
      raise ValueError(f"queries have token vectors of dimension {padded['vectors'].shape[-1]}; the documents "
                       f"have {self.dimension}")
    scores = np.zeros((blocks * self.query_block, k), np.float32)
    indices = np.zeros((blocks * self.query_block, k), np.int64)
    for start in range(0, len(scores), self.query_block):
      rows = slice(start, start + self.query_block)
      block = {key: value[rows] for key, value in padded.items()}
      block_scores, block_indices = top_k_over_tiles(maxsim, block, self._tiles, self.num_vectors, k)
      scores[rows], indices[rows] = np.asarray(block_scores), np.asarray(block_indices)
    return indices[:m], scores[:m]
