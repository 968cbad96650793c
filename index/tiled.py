"""Top-k over document tiles with a running merge: the exact searches' one loop.

`score(queries, tile) → [b, tile]` is any jit-able scorer of a query block against a tile of
documents (pytrees whose leaves lead with the block and the tile). A `lax.scan` over the tiles
keeps the best k per query: top_k(concat(best so far, tile scores)); lax.top_k puts the lower
position first on ties, and the running best always holds lower indices than the tile, so ties
go to the lower document index. Slots past `num_docs` (the last tile's padding) score −inf.
"""
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("score", "k"))
def top_k_over_tiles(score, queries, tiles, num_docs, k):
  """(scores [b, k] float32 descending, indices [b, k] int32) of the tiles' documents."""
  b = jax.tree.leaves(queries)[0].shape[0]
  num_tiles, tile = jax.tree.leaves(tiles)[0].shape[:2]
  init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.zeros((b, k), jnp.int32))

  def step(best, xs):
    docs, offset = xs
    ids = offset + jnp.arange(tile, dtype=jnp.int32)
    scores = jnp.where(ids < num_docs, score(queries, docs).astype(jnp.float32), -jnp.inf)
    merged = jnp.concatenate([best[0], scores], axis=1)
    merged_ids = jnp.concatenate([best[1], jnp.broadcast_to(ids, (b, tile))], axis=1)
    top, pos = jax.lax.top_k(merged, k)
    return (top, jnp.take_along_axis(merged_ids, pos, axis=1)), None

  offsets = jnp.arange(num_tiles, dtype=jnp.int32) * tile
  (scores, indices), _ = jax.lax.scan(step, init, (tiles, offsets))
  return scores, indices
