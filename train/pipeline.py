"""A grain pipeline from training rows (or documents) to fixed-width token batches for this host.

rows → shuffle (reshuffled each epoch) → repeat → sample negatives (an RNG seeded by the
position in the global stream, so the stream is a pure function of the seed) → global batch →
this host's block of it → the task's collate (tasks/; the model's text path, at config.data's
max lengths). A task that reads documents (reconstruction) takes the corpus's texts instead of
rows. Host p takes rows p·b … (p+1)·b − 1 of each global batch of b·process_count, so the hosts'
local batches laid end to end are the global batch in the order one process has it (dropout
masks, drawn by row position, are then the same on any number of hosts).

A batch holds one or more sides (ranking: query and doc; pairs: pair; reconstruction: text),
each as `<side>_ids`, `<side>_mask` (and `<side>_type_ids`), padded to the side's full length
here; `global_batch` cuts each to a length bucket (the task's `buckets`) in the loop. Where a
side that the task runs unpadded has real tokens that fit a capacity
(`unpadding.capacity_fractions`) in every block of rows that a device holds, the loop adds its
pack index (`<side>_pack` [shards, capacity]; backbones/unpadding.py): the step then runs that
side's per-token layers on its real tokens only, each device on its own.

A ranking sample holds, for C = num_positives + num_negatives candidates: the query, the
candidates' texts, labels [C] (grades, or teacher scores), candidate_mask [C], and doc_index
[C] and query_positives [K]: corpus positions (−1 pads), which objective.candidate_targets uses
to keep relevant documents out of in-batch negatives.
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
    self.buckets = task.buckets(data_config, text)
    local_batch = global_batch // process_count
    block = slice(process_index * local_batch, (process_index + 1) * local_batch)
    if task.reads == "documents":
      self.samples = grain.MapDataset.source(self.doc_texts).shuffle(seed=seed).repeat()
    else:
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


def global_batch(batch, mesh, rules, buckets: dict, unpad: tuple[str, ...] = ()) -> dict:
  """Trims each side of this host's batch (the keys `<side>_*`; `buckets`: Pipeline.buckets) to a
  length bucket that every host agrees on, adds the pack index `<side>_pack` of each side in
  `unpad` whose real tokens fit a capacity in every block of rows a device holds, then makes
  global arrays. A side with one bucket (an expanded one) keeps its full length."""
  shards = sharding.batch_shards(mesh, rules)
  unpad = unpad if shards % jax.process_count() == 0 else ()
  local_shards = shards // jax.process_count() if unpad else 1
  sides = list(buckets)
  masks = [batch[f"{side}_mask"].reshape(-1, batch[f"{side}_mask"].shape[-1]) for side in sides]
  needed = np.asarray([int(m.sum(-1).max()) for m in masks]
                      + [unpadding.shard_tokens(m, local_shards).max() for m in masks], np.int32)
  if jax.process_count() > 1:
    needed = multihost_utils.process_allgather(needed).max(0)
  lengths = {side: bucket(needed[i], buckets[side]) for i, side in enumerate(sides)}
  batch = trim(batch, lengths)
  for i, side in enumerate(sides):
    if side in unpad:
      capacity = unpadding.shard_capacity(int(needed[len(sides) + i]), masks[i].shape[0] // local_shards * lengths[side])
      if capacity:
        batch[f"{side}_pack"] = unpadding.pack_index(masks[i][:, :lengths[side]], local_shards, capacity)
  return {k: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, rules, v.ndim), v)
          for k, v in batch.items()}


def bucket(length: int, buckets) -> int:
  return next(b for b in sorted(buckets) if b >= length)


def trim(batch: dict, lengths: dict[str, int]) -> dict:
  """Each side's token arrays (`<side>_ids`, `_mask`, `_type_ids`) cut to its length."""
  out = dict(batch)
  for side, length in lengths.items():
    for key in (f"{side}_ids", f"{side}_mask", f"{side}_type_ids"):
      if key in batch:
        out[key] = batch[key][..., :length]
  return out
