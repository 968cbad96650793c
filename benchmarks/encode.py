"""retrax vs sentence-transformers: encode the same SciFact texts, side by side, one run.

  python benchmarks/encode.py [--texts documents|queries] [--count 1000] [--max-length 256]
                              [--batch-size 32] [--dtype float32] [--repeats 2] [--peak-tflops T]

Prints texts/s for each (retrax also with unpadding off), the ratio, and achieved GFLOP/s on the real tokens
against the float32 matmul peak measured here by both frameworks. With --peak-tflops
(the accelerator's bf16 peak) it also prints MFU. sentence-transformers runs in float16
on CUDA when --dtype is bfloat16.
"""
import argparse
import copy
import gzip
import itertools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import retrax
from retrax import ops
from retrax.xla_cpu.host_memory import keep_freed_memory
from retrax.models.wheel import minilm_path

SCIFACT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "beir-scifact"


def scifact_texts(n, kind="documents"):
  """The first n documents (title + text), or the first n queries."""
  if kind == "queries":
    with open(SCIFACT / "queries.jsonl") as f:
      return [json.loads(line)["text"] for line in itertools.islice(f, n)]
  with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as f:
    return [(d["title"] + " " + d["text"]).strip() for d in map(json.loads, itertools.islice(f, n))]


def encoder_flops(lengths, c):
  """Σ_texts 2·n·(4h² + 2h·m)·layers + 4·n²·h·layers: matmuls and attention, real tokens only."""
  n = np.asarray(lengths, np.float64)
  per_layer = 2 * n * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size) + 4 * n ** 2 * c.hidden_size
  return float(per_layer.sum() * c.num_hidden_layers)


def matmul_peaks():
  import torch
  a, b = np.random.rand(8192, 384).astype(np.float32), np.random.rand(384, 1536).astype(np.float32)
  flop = 2 * 8192 * 384 * 1536
  f = ops.jit(jnp.matmul)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  peaks = {}
  for name, step in (("jax", lambda: f(ja, jb).block_until_ready()), ("torch", lambda: ta @ tb)):
    step()
    start = time.perf_counter()
    for _ in range(10):
      step()
    peaks[name] = flop * 10 / (time.perf_counter() - start) / 1e9
  return peaks


def best_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--texts", default="documents", choices=("documents", "queries"))
  p.add_argument("--count", type=int, default=1000, help="how many texts")
  p.add_argument("--max-length", type=int, default=256)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--peak-tflops", type=float, default=None)
  p.add_argument("--keep-freed-memory", action="store_true",
                 help="glibc keeps freed memory for reuse (retrax.xla_cpu.host_memory), for both sides")
  args = p.parse_args()
  if args.keep_freed_memory:
    keep_freed_memory()

  import torch
  from sentence_transformers import SentenceTransformer
  texts = scifact_texts(args.count, args.texts)
  ours = retrax.load(minilm_path(), max_length=args.max_length, dtype=args.dtype)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  theirs = SentenceTransformer(str(minilm_path()), device=device)
  theirs.max_seq_length = args.max_length
  if args.dtype == "bfloat16" and device == "cuda":
    theirs.half()

  start = time.perf_counter()
  ours.encode(texts, batch_size=args.batch_size)
  cold = time.perf_counter() - start
  t_ours = best_time(lambda: ours.encode(texts, batch_size=args.batch_size), args.repeats)
  padded = copy.copy(ours)
  padded.unpad = False
  padded.encode(texts, batch_size=args.batch_size)
  t_padded = best_time(lambda: padded.encode(texts, batch_size=args.batch_size), args.repeats)
  t_theirs = best_time(lambda: theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True),
                       args.repeats)
  lengths = [len(ids) for ids, _ in ours.text.token_rows(texts, "document")]
  gflop = encoder_flops(lengths, ours.backbone_config) / 1e9

  rows = [("retrax (compiled)", t_ours), ("retrax (with compilation)", cold), ("retrax, unpadding off", t_padded),
          ("sentence-transformers", t_theirs)]
  print(f"{len(texts)} SciFact {args.texts}, max length {args.max_length}, batch {args.batch_size}, {args.dtype}, "
        f"{jax.devices()[0].platform} / torch {device}; {gflop:.0f} GFLOP of real-token work\n")
  print("| encoder | texts/s | GFLOP/s |" + (" MFU |" if args.peak_tflops else ""))
  print("|---|---|---|" + ("---|" if args.peak_tflops else ""))
  for name, t in rows:
    mfu = f" {gflop / t / 1e3 / args.peak_tflops:.1%} |" if args.peak_tflops else ""
    print(f"| {name} | {len(texts) / t:.1f} | {gflop / t:.0f} |{mfu}")
  print(f"\nratio retrax / sentence-transformers: {t_theirs / t_ours:.2f}x compiled, {t_theirs / cold:.2f}x with compilation")
  if device == "cpu":
    peaks = matmul_peaks()
    print(f"float32 matmul peak here: jax {peaks['jax']:.0f} GFLOP/s, torch {peaks['torch']:.0f} GFLOP/s; "
          f"retrax at {gflop / t_ours / peaks['jax']:.0%} of jax's, sentence-transformers at "
          f"{gflop / t_theirs / peaks['torch']:.0%} of torch's")


if __name__ == "__main__":
  main()
