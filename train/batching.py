"""Micro-batches and chunks that take every k-th row, so that each holds rows from every device."""
import jax


def strided_split(tree, k: int):
  """Leading dim B → [k, B/k]; part i holds rows i, i+k, i+2k, …"""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), tree)


def strided_merge(tree):
  return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(-1, *x.shape[2:]), tree)


def default_buckets(max_length: int) -> tuple[int, ...]:
  """A training side's length buckets when the config names none: max/4, max/2 and max."""
  return tuple(sorted({max(max_length // 4, 1), max(max_length // 2, 1), max_length}))
