"""retrax vs sentence-transformers: one training step of all-MiniLM-L6-v2, side by side, one run.

  python benchmarks/train_step.py [--steps 6] [--batch-size 32] [--dtype float32] [--peak-tflops T]

Both train on the same SciFact train batches (query ≤ 64 tokens, positive and one hard
negative ≤ 256 tokens; the negative is a random corpus document) with in-batch negatives,
InfoNCE at temperature 0.05 (MultipleNegativesRankingLoss, scale 20) and AdamW (lr 2e-5).
Each step is timed whole: tokenisation, forward, backward, optimizer update. retrax pads to
its length buckets; sentence-transformers pads to the batch's longest text and runs with
dropout as it trains by default. Prints queries/s for each, the ratio, and achieved GFLOP/s
(3 × forward FLOPs on real tokens) against the float32 matmul peak; MFU with --peak-tflops.
"""
import argparse
import json
import pathlib
import tempfile
import time

import jax
from flax import nnx
import numpy as np

import retrax
from retrax.configs import common
from retrax.models.wheel import minilm_path
from retrax.train import examples
from retrax.train.optimizer import make_optimizer
from retrax.train.objective import loss_fn
from retrax.train.pipeline import Pipeline, bucket, default_buckets, needed_lengths, trim
from retrax.train.step import StepBuilder, TrainState

from encode import encoder_flops, matmul_peaks

SCIFACT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "beir-scifact"


def training_samples(retriever, config, count):
  """`count` SciFact train rows, each with one random corpus document as its hard negative, and the pipeline."""
  collection = examples.build(SCIFACT, "train").collection
  rng = np.random.default_rng(0)
  docs = list(collection.corpus)
  with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for qid in collection.qrels:
      f.write(json.dumps({"qid": qid, "negatives": [docs[i] for i in rng.choice(len(docs), 3)]}) + "\n")
  training_set = examples.build(SCIFACT, "train", f.name)
  pipeline = Pipeline(training_set, retriever.batcher.tokenizer, retriever.batcher.pad_id, config.data,
                      retriever.settings, seed=0, global_batch=config.batch_size)
  return [pipeline.samples[i] for i in range(count)], pipeline


def retrax_step_time(retriever, config, groups, collate):
  optimizer = make_optimizer(config)
  builder = StepBuilder(retriever.graphdef, retriever.settings, loss_fn(config.loss), True, optimizer)
  params = nnx.to_pure_dict(retriever.params)
  state = TrainState(params, optimizer.init(params), np.int32(0))
  step = jax.jit(builder, donate_argnums=0)
  key = jax.random.key(0)

  def run(state, samples):
    raw = collate(samples)
    q, d = needed_lengths(raw)
    return step(state, trim(raw, bucket(q, default_buckets(64)), bucket(d, default_buckets(256))), key)

  for samples in groups:  # compile every bucket pair these batches need
    state, metrics = run(state, samples)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for samples in groups:
    state, metrics = run(state, samples)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / len(groups)


def st_step_time(texts, batch_size):
  import torch
  from sentence_transformers import SentenceTransformer, losses
  model = SentenceTransformer(str(minilm_path()), device="cpu")
  model.max_seq_length = 256
  loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
  optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
  model.train()

  def step(rows):
    features = [model.tokenize([r[i] for r in rows]) for i in range(len(rows[0]))]
    value = loss(features, None)
    optimizer.zero_grad()
    value.backward()
    optimizer.step()

  groups = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
  step(groups[0])
  start = time.perf_counter()
  for rows in groups:
    step(rows)
  return (time.perf_counter() - start) / len(groups)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=6)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--peak-tflops", type=float, default=None)
  args = p.parse_args()

  config = common.train_config()
  config.batch_size, config.dtype = args.batch_size, args.dtype
  config.warmup_steps, config.total_steps = 0, 1000
  config.data.num_negatives = 1
  retriever = retrax.load(minilm_path(), max_length=256, dtype=args.dtype)
  samples, pipeline = training_samples(retriever, config, args.steps * args.batch_size)
  groups = [samples[i:i + args.batch_size] for i in range(0, len(samples), args.batch_size)]
  batches = [pipeline.collate(g) for g in groups]
  texts = [(s["query"], *s["docs"]) for s in samples]

  t_ours = retrax_step_time(retriever, config, groups, pipeline.collate)
  t_theirs = st_step_time(texts, args.batch_size)
  lengths = [m.sum(-1) for b in batches for m in (b["query_mask"], b["doc_mask"].reshape(-1, b["doc_mask"].shape[-1]))]
  flop = 3 * encoder_flops(np.concatenate(lengths), retriever.backbone_config) / len(batches)
  print(f"all-MiniLM-L6-v2, batch {args.batch_size} (query ≤64, positive + hard negative ≤256 tokens), "
        f"{args.dtype}, {jax.devices()[0].platform}; {flop / 1e9:.0f} GFLOP per step on real tokens\n")
  print("| trainer | s/step | queries/s | GFLOP/s |")
  print("|---|---|---|---|")
  for name, t in (("retrax", t_ours), ("sentence-transformers MNRL", t_theirs)):
    print(f"| {name} | {t:.2f} | {args.batch_size / t:.2f} | {flop / t / 1e9:.0f} |")
  print(f"\nratio retrax / sentence-transformers: {t_theirs / t_ours:.2f}x")
  if jax.devices()[0].platform == "cpu":
    peaks = matmul_peaks()
    print(f"float32 matmul peak: jax {peaks['jax']:.0f}, torch {peaks['torch']:.0f} GFLOP/s")
  elif args.peak_tflops:
    print(f"MFU: {flop / t_ours / 1e12 / args.peak_tflops:.1%}")


if __name__ == "__main__":
  main()
