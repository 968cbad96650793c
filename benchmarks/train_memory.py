"""Per-device training memory of all-MiniLM-L6-v2 from the compiled step: FSDP scaling and GradCache.

  python benchmarks/train_memory.py [--devices 8] [--grad-cache-batch 4096] [--chunks 64]

1. Parameters + AdamW state per device under fsdp = 1, 2, 4, 8 (data = devices / fsdp), read
   from the sharded arrays, with the compiled step's argument and temporary sizes (XLA's
   memory analysis) for a batch of 32.
2. One step over --grad-cache-batch queries (query 64, positive and hard negative 256 tokens):
   the compiled step's temporary memory with plain backprop and with GradCache. Compiled only,
   not run.
Runs on CPU with --devices virtual devices.
"""
import argparse
import os
import sys

if __name__ == "__main__":
  devices = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), "8")
  os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

import retrax
from retrax import ops
from retrax.configs import common
from retrax.models.wheel import minilm_path
from retrax.train import sharding
from retrax.train.mesh import make_mesh
from retrax.train.objective import loss_fn
from retrax.train.optimizer import make_optimizer
from retrax.train.step import StepBuilder, initial_state
from retrax.train.tasks import Ranking

GIB = 2 ** 30


def abstract_batch(batch, mesh, rules, negatives=1):
  c = 1 + negatives
  shapes = {"query_ids": (batch, 64), "query_mask": (batch, 64), "doc_ids": (batch, c, 256),
            "doc_mask": (batch, c, 256), "labels": (batch, c), "candidate_mask": (batch, c),
            "doc_index": (batch, c), "query_positives": (batch, 1)}
  dtypes = {"labels": jnp.float32, "candidate_mask": jnp.bool_}
  return {k: jax.ShapeDtypeStruct(s, dtypes.get(k, jnp.int32), sharding=sharding.batch_sharding(mesh, rules, len(s)))
          for k, s in shapes.items()}


def compiled(retriever, config, mesh, batch, grad_cache_chunks=0):
  rules = tuple(tuple(r) for r in config.sharding_rules)
  optimizer = make_optimizer(config)
  state = initial_state(retriever.module, optimizer, mesh, rules)
  builder = StepBuilder(retriever.graphdef, Ranking(loss_fn(config.loss), True, grad_cache_chunks), optimizer)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  step = ops.jit(builder, out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())), donate_argnums=0)
  lowered = step.lower(state, abstract_batch(batch, mesh, rules), jax.random.key(0))
  return state, lowered.compile().memory_analysis()


def per_device_bytes(tree) -> int:
  return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(tree))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--grad-cache-batch", type=int, default=4096)
  p.add_argument("--chunks", type=int, default=64)
  args = p.parse_args()
  config = common.train_config()
  retriever = retrax.load(minilm_path(), max_length=256)
  n = jax.device_count()

  print(f"all-MiniLM-L6-v2, AdamW, {n} {jax.devices()[0].platform} devices\n")
  print("| mesh (data, fsdp, tensor) | params + optimizer per device (MiB) | step arguments (MiB) | step temporaries (MiB) |")
  print("|---|---|---|---|")
  fsdp = 1
  while fsdp <= n:
    config.mesh = ml_collections.ConfigDict(dict(data=n // fsdp, fsdp=fsdp, tensor=1))
    state, memory = compiled(retriever, config, make_mesh(config.mesh), 32)
    resident = per_device_bytes((state.params, state.opt_state))
    print(f"| ({n // fsdp}, {fsdp}, 1) | {resident / 2**20:.1f} | {memory.argument_size_in_bytes / 2**20:.1f} | "
          f"{memory.temp_size_in_bytes / 2**20:.1f} |")
    fsdp *= 2

  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))
  one = make_mesh(config.mesh, jax.devices()[:1])
  print(f"\nOne step over {args.grad_cache_batch} queries (+ positive and hard negative), one device:\n")
  print("| gradients | step temporaries (GiB) |")
  print("|---|---|")
  for name, chunks in (("plain backprop", 0), (f"GradCache, {args.chunks} chunks", args.chunks)):
    _, memory = compiled(retriever, config, one, args.grad_cache_batch, chunks)
    print(f"| {name} | {memory.temp_size_in_bytes / GIB:.2f} |")


if __name__ == "__main__":
  main()
