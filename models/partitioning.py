"""Logical axis names on parameters ('vocab', 'embed', 'mlp', 'heads'), mapped to mesh axes by config rules.

Sharding is applied by the trainer (MaxText style), not when a variable is created, so
models build on any device without a mesh in scope.
"""
from flax import nnx


def logical(initializer, *names: str):
  """`initializer` whose variables carry `names` as their logical axes."""
  return nnx.with_partitioning(initializer, names, eager_sharding=False)
