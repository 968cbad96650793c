"""A restart against the config saved with the checkpoint: how long and how it reports may change,
what the run is may not.

Allowed (logged): the keys under RESUMABLE: the length of the run (total_steps, which also
stretches the learning-rate decay), logging, checkpointing, periodic evaluation, the mesh (a
checkpoint reshards onto another), multi-host start-up, GradCache chunking (same gradients),
and the mining batch size. Every other key defines the run (model, data, batch size, seed, loss,
optimizer, dtype, sharding rules, …): a change is refused with one line naming the keys.
"""
import json
import logging

from ..errors import InputError

RESUMABLE = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "progress", "eval", "mesh",
             "distributed", "grad_cache_chunks", "data.mine.batch_size")


def flatten(tree: dict, prefix: str = "") -> dict:
  """{dotted key: leaf} of nested dicts (an empty dict is a leaf)."""
  if isinstance(tree, dict) and tree:
    return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def _resumable(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in RESUMABLE)


def check(saved: dict, config, where) -> None:
  """InputError if `config` changes a key that defines the run; the allowed changes are logged."""
  before, after = flatten(saved), flatten(json.loads(config.to_json()))
  missing = object()
  changed = {k: (before.get(k, missing), after.get(k, missing)) for k in sorted(before.keys() | after.keys())
             if before.get(k, missing) != after.get(k, missing)}

  def show(key):
    old, new = (("(absent)" if v is missing else json.dumps(v)) for v in changed[key])
    return f"{key} {old} → {new}"
  refused = [show(k) for k in changed if not _resumable(k)]
  if refused:
    raise InputError(where, "the config differs from the saved one in keys that define the run: "
                     f"{'; '.join(refused)}. Resume with the saved values or start a new workdir")
  if changed:
    logging.warning("resuming with changed settings: %s", "; ".join(show(k) for k in changed))
