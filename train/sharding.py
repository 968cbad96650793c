"""Logical axis names to mesh shardings, by rules from the config (MaxText style).

A rule maps a logical name ('batch', 'embed', 'mlp', 'heads', 'vocab', ...) to mesh axes. A
dimension whose size the mapped axes do not divide is replicated instead, and a mesh axis is
used at most once per array.
"""
import math

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
)


def _as_tuple(axes):
  return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def spec_for(shape, logical_names, mesh, rules) -> PartitionSpec:
  rules = {name: _as_tuple(axes) for name, axes in rules}
  used, spec = set(), []
  for size, name in zip(shape, logical_names or (None,) * len(shape)):
    axes = tuple(a for a in rules.get(name, ()) if a not in used and mesh.shape[a] > 1)
    if not axes or size % math.prod(mesh.shape[a] for a in axes):
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def param_shardings(state: nnx.State, mesh, rules) -> dict:
  """NamedShardings, as a pure dict, for an nnx.State whose variables carry logical axis names."""
  def one(var):
    return var.replace(NamedSharding(mesh, spec_for(var.get_value().shape, var.get_metadata().get("out_sharding"),
                                                    mesh, rules)))
  return nnx.to_pure_dict(jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def _batch_axes(mesh, rules) -> tuple[str, ...]:
  return tuple(a for a in dict((n, _as_tuple(a)) for n, a in rules).get("batch", ()) if mesh.shape[a] > 1)


def batch_shards(mesh, rules) -> int:
  """How many blocks of rows `batch_sharding` splits the batch into."""
  return math.prod(mesh.shape[a] for a in _batch_axes(mesh, rules))


def batch_sharding(mesh, rules, ndim: int) -> NamedSharding:
  """Leading (batch) dimension over the rule for 'batch'; the rest replicated."""
  axes = _batch_axes(mesh, rules)
  lead = None if not axes else axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))
