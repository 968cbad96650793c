"""Unpadding where it pays: a ModernBERT forward at several fill rates, padded vs unpadded, against
transformers' ModernBertModel (sdpa) on the same weights and inputs, one run.

  python benchmarks/unpadding.py [--layers 4] [--batch-size 32] [--length 256] [--repeats 3]

A random ModernBERT-base-width model (hidden 768, 12 heads, GeGLU 1152, local window 128); row
lengths drawn around fill × length, one row always full. Prints ms per batch and ratios.
"""
import argparse
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from flax import nnx

from retrax import ops
from retrax.models.backbones import hf, unpadding


def best_ms(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * min(times)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--length", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()

  torch.manual_seed(0)
  config = transformers.ModernBertConfig(
      vocab_size=50368, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
      intermediate_size=1152, local_attention=128, global_attn_every_n_layers=3, attn_implementation="sdpa")
  theirs = transformers.ModernBertModel(config).eval()
  with tempfile.TemporaryDirectory() as folder:
    theirs.save_pretrained(folder)
    _, ours = hf.load_backbone(folder)
  graphdef, params = nnx.split(ours)
  forward = ops.jit(lambda params, ids, mask, capacity: nnx.merge(graphdef, params)(ids, mask, None, capacity),
                    static_argnums=3)

  rng = np.random.default_rng(0)
  b, l = args.batch_size, args.length
  print(f"ModernBERT, {args.layers} layers, hidden 768, batch {b} × {l}, float32, CPU threads {torch.get_num_threads()}\n")
  print("| fill | capacity | retrax padded ms | retrax unpadded ms | transformers ms | unpadded / padded | vs transformers |")
  print("|---|---|---|---|---|---|---|")
  for fill in (0.2, 0.45, 0.7, 0.95):
    lengths = np.clip(rng.normal(fill * l, 0.15 * l, b).astype(int), 1, l)
    lengths[0] = l
    mask = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, 50000, (b, l)).astype(np.int32) * mask
    capacity = unpadding.token_capacity(mask)
    padded = best_ms(lambda: forward(params, ids, mask, None).block_until_ready(), args.repeats)
    unpadded = best_ms(lambda: forward(params, ids, mask, capacity).block_until_ready(), args.repeats)
    with torch.no_grad():
      t_ids, t_mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask)
      reference = best_ms(lambda: theirs(input_ids=t_ids, attention_mask=t_mask), args.repeats)
    print(f"| {mask.mean():.2f} | {capacity or 'padded'} | {padded:.0f} | {unpadded:.0f} | {reference:.0f} | "
          f"{padded / unpadded:.2f}× | {reference / unpadded:.2f}× |")


if __name__ == "__main__":
  main()
