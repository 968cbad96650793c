"""A grain pipeline from training rows to fixed-width token batches for this host.

rows → shuffle (reshuffled each epoch) → repeat → sample negatives (an RNG seeded by the
position in the global stream, so the stream is a pure function of the seed) → global batch →
this host's block of it → the task's collate (the model's text path, at config.data's max lengths).
Host p takes rows p·b … (p+1)·b − 1 of each global batch of b·process_count, so the hosts'
local batches laid end to end are the global batch in the order one process has it (dropout
masks, drawn by row position, are then the same on any number of hosts). Batches are padded to
the full query and document lengths here; `trim` cuts them to a length bucket in the loop.
Where a side's real tokens fit a capacity (`unpadding.capacity_fractions`) in every block of rows
that a device holds, the loop adds its pack index (`query_pack`, `doc_pack` [shards, capacity]; backbones/unpadding.py): the
step then runs that side's per-token layers on its real tokens only, each device on its own.

A batch holds, for b rows and C = num_positives + num_negatives candidates:
  query_ids, query_mask [b, Lq]; doc_ids, doc_mask [b, C, Ld];
  labels [b, C] (grades, or teacher scores), candidate_mask [b, C];
  doc_index [b, C] and query_positives [b, K]: corpus positions (−1 pads), which
  objective.candidate_targets uses to keep relevant documents out of in-batch negatives.
"""
import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

from ..errors import InputError
from ..eval import beir
from ..models.backbones import unpadding
from ..models.text import TextPath
from . import sharding
from .tasks.ranking import Ranking


class Pipeline:

  def __init__(self, training_set, text: TextPath, data_config, *, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1, task=Ranking):
    if global_batch % process_count:
      raise InputError("config.batch_size", f"{global_batch} is not a multiple of the {process_count} hosts")
    self.task = task
    corpus = training_set.collection.corpus
    self.doc_ids = list(corpus)
    self.doc_position = {d: i for i, d in enumerate(self.doc_ids)}
    self.doc_texts = [beir.document_text(corpus[d]) for d in self.doc_ids]
    self.queries = training_set.collection.queries
    self.qrels = training_set.collection.qrels
    self.rows = training_set.rows
    self.num_positives, self.num_negatives = data_config.num_positives, data_config.num_negatives
    self.max_query_positives = max(sum(g > 0 for g in j.values()) for j in self.qrels.values())
    self.text = text.with_max_lengths(query=data_config.query_max_len, document=data_config.doc_max_len)
    for side, key in (("query", "query_max_len"), ("document", "doc_max_len")):
      if side in text.expand and data_config[key] != text.max_lengths[side]:
        raise InputError(f"config.data.{key}", f"{data_config[key]}: the retriever expands every {side} to exactly "
                                               f"{text.max_lengths[side]} tokens; set it to {text.max_lengths[side]}")
    self.buckets = tuple(
        (length,) if side in text.expand else tuple(data_config.get(f"{short}_buckets") or default_buckets(length))
        for side, short, length in (("query", "query", data_config.query_max_len),
                                    ("document", "doc", data_config.doc_max_len)))
    local_batch = global_batch // process_count
    block = slice(process_index * local_batch, (process_index + 1) * local_batch)
    self.samples = grain.MapDataset.source(self.rows).shuffle(seed=seed).repeat().random_map(self.sample, seed=seed)
    self.dataset = self.samples.batch(global_batch, drop_remainder=True, batch_fn=lambda rows: self.collate(rows[block]))

  def sample(self, row, rng: np.random.Generator) -> dict:
    """One row's candidates: its positives, then negatives drawn from its pool without replacement."""
    take = min(self.num_negatives, len(row.negatives))
    negatives = [row.negatives[i] for i in sorted(rng.choice(len(row.negatives), take, replace=False))]
    candidates = list(row.positives) + [None] * (self.num_positives - len(row.positives))
    candidates += negatives + [None] * (self.num_negatives - take)
    judged = self.qrels[row.qid]
    if row.teacher is not None:
      labels = [row.teacher[d] if d else 0.0 for d in candidates]
    else:
      labels = [float(judged.get(d, 0)) if d else 0.0 for d in candidates]
    positives = [self.doc_position[d] for d, g in judged.items() if g > 0 and d in self.doc_position]
    return {
        "query": self.queries[row.qid],
        "docs": [self.doc_texts[self.doc_position[d]] if d else "" for d in candidates],
        "labels": np.asarray(labels, np.float32),
        "candidate_mask": np.asarray([d is not None for d in candidates]),
        "doc_index": np.asarray([self.doc_position[d] if d else -1 for d in candidates], np.int32),
        "query_positives": np.asarray(positives + [-1] * (self.max_query_positives - len(positives)), np.int32),
    }

  def collate(self, samples: list[dict]) -> dict:
    """Samples → one batch of token arrays, as the task lays it out (tasks/)."""
    return self.task.collate(self.text, samples)


def default_buckets(max_length: int) -> tuple[int, ...]:
  return tuple(sorted({max(max_length // 4, 1), max(max_length // 2, 1), max_length}))


def global_batch(batch, mesh, rules, buckets, unpad: bool = False) -> dict:
  """Trims this host's batch to a length bucket (`Pipeline.buckets`, query and document) that every
  host agrees on, adds the pack indices of the sides worth unpadding (`unpad`), then makes global
  arrays. An expanded side has one bucket, its full length."""
  shards = sharding.batch_shards(mesh, rules)
  unpad = unpad and shards % jax.process_count() == 0
  local_shards = shards // jax.process_count() if unpad else 1
  masks = (batch["query_mask"], batch["doc_mask"].reshape(-1, batch["doc_mask"].shape[-1]))
  needed = np.asarray([*needed_lengths(batch), *(unpadding.shard_tokens(m, local_shards).max() for m in masks)],
                      np.int32)
  if jax.process_count() > 1:
    needed = multihost_utils.process_allgather(needed).max(0)
  lengths = [bucket(needed[0], buckets[0]), bucket(needed[1], buckets[1])]
  batch = trim(batch, *lengths)
  if unpad:
    for side, mask, length, real in zip(("query", "doc"), masks, lengths, needed[2:]):
      capacity = unpadding.shard_capacity(int(real), mask.shape[0] // local_shards * length)
      if capacity:
        batch[f"{side}_pack"] = unpadding.pack_index(mask[:, :length], local_shards, capacity)
  return {k: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, rules, v.ndim), v)
          for k, v in batch.items()}


def bucket(length: int, buckets) -> int:
  return next(b for b in sorted(buckets) if b >= length)


def needed_lengths(batch) -> tuple[int, int]:
  return int(batch["query_mask"].sum(-1).max()), int(batch["doc_mask"].sum(-1).max())


def trim(batch: dict, query_length: int, doc_length: int) -> dict:
  out = dict(batch)
  for k in ("query_ids", "query_mask"):
    out[k] = batch[k][..., :query_length]
  for k in ("doc_ids", "doc_mask"):
    out[k] = batch[k][..., :doc_length]
  return out
