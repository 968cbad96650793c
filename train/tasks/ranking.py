"""The ranking task: B queries with C candidates each, scored by a retriever's score(q, d) (with
in-batch negatives when configured: objective.py), under a configured loss; GradCache optional.

Batch (pipeline.py): query_ids, query_mask [B, Lq]; doc_ids, doc_mask [B, C, Ld]; optional
query_pack / doc_pack (unpadding); labels, candidate_mask [B, C]; doc_index [B, C] and
query_positives [B, K] (objective.candidate_targets).

GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): embed the batch in chunks without keeping activations, take the loss and ∂L/∂embeddings
on the full batch, then re-run each chunk under jax.vjp with those cotangents (pytrees shaped
like the kind's representations), so activation memory is one chunk's while negatives span the
whole batch. Chunks take every k-th row, so each holds rows from every device; chunk i draws its
dropout from fold_in(dropout key, i), and its replay under jax.vjp draws the masks of its first
pass. The module's state beyond parameters is read, not updated, under GradCache.
"""
import dataclasses
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ...errors import InputError
from .. import objective
from ..batching import default_buckets, strided_merge, strided_split

TOKENS = ("query_ids", "query_mask", "doc_ids", "doc_mask")


def _floating(tree):
  """The representation's floating leaves, the others (masks) None: what GradCache differentiates."""
  return jax.tree.map(lambda x: x if jnp.issubdtype(x.dtype, jnp.floating) else None, tree)


def _filled(floating, tree):
  """`floating` with its None leaves taken from `tree`."""
  return jax.tree.map(lambda f, x: x if f is None else f, floating, tree, is_leaf=lambda v: v is None)


@dataclasses.dataclass(frozen=True)
class Ranking:
  name: ClassVar[str] = "ranking"
  reads: ClassVar[str] = "rows"
  unpadded: ClassVar[tuple[str, ...]] = ("query", "doc")  # the sides the retriever can run unpadded
  loss: Callable              # objective.loss_fn(config.loss)
  in_batch: bool
  grad_cache_chunks: int = 0  # 0: off; else the number of chunks

  @staticmethod
  def buckets(data_config, text) -> dict[str, tuple[int, ...]]:
    """Each side's length buckets: config.data's, or max/4, max/2, max; an expanded side (ColBERT's
    queries) has one, its full length, which config.data must then equal."""
    out = {}
    for side, short in (("query", "query"), ("document", "doc")):
      length = data_config[f"{short}_max_len"]
      if side in text.expand and length != text.max_lengths[side]:
        raise InputError(f"config.data.{short}_max_len", f"{length}: the retriever expands every {side} to exactly "
                                                         f"{text.max_lengths[side]} tokens; set it to "
                                                         f"{text.max_lengths[side]}")
      out[short] = (length,) if side in text.expand else tuple(data_config.get(f"{short}_buckets") or
                                                               default_buckets(length))
    return out

  @staticmethod
  def collate(text, samples: list[dict]) -> dict:
    """Samples (pipeline.Pipeline.sample) → one batch; both sides padded to their max lengths."""
    query_ids, query_mask = text.tokenize([s["query"] for s in samples], "query")
    doc_ids, doc_mask = text.tokenize([t for s in samples for t in s["docs"]], "document")
    b = len(samples)
    return {
        "query_ids": query_ids, "query_mask": query_mask,
        "doc_ids": doc_ids.reshape(b, -1, doc_ids.shape[-1]), "doc_mask": doc_mask.reshape(b, -1, doc_mask.shape[-1]),
        **{k: np.stack([s[k] for s in samples]) for k in ("labels", "candidate_mask", "doc_index", "query_positives")},
    }

  @staticmethod
  def embeddings(module, batch, dropout):
    """The representations of a batch's B queries and of their [B, C] candidates; a side with a
    pack index (pipeline.global_batch) runs unpadded."""
    b, c, l = batch["doc_ids"].shape
    q = module.encode({"input_ids": batch["query_ids"], "attention_mask": batch["query_mask"]}, "query",
                      packing=batch.get("query_pack"), dropout=dropout)
    d = module.encode({"input_ids": batch["doc_ids"].reshape(b * c, l),
                       "attention_mask": batch["doc_mask"].reshape(b * c, l)}, "document",
                      packing=batch.get("doc_pack"), dropout=dropout)
    return q, jax.tree.map(lambda x: x.reshape(b, c, *x.shape[1:]), d)

  def objective(self, q, d, batch, key, module):
    """(loss, the module's regularizers(q, d)) of a batch's representations."""
    scores = objective.candidate_scores(q, d, self.in_batch, module.score).astype(jnp.float32)
    labels, mask = objective.candidate_targets(batch, self.in_batch)
    return self.loss(scores, labels, mask, key), module.regularizers(q, d)

  def terms(self, module, batch, key, dropout):
    return self.objective(*self.embeddings(module, batch, dropout), batch, key, module)

  def grad_cache(self, module_of, params, batch, key, dropout_of, total):
    """((total(loss, regularizers), regularizers), ∂/∂params) by GradCache.

    module_of(params) → the module; dropout_of(i) → chunk i's Dropout; total(loss, terms) → the
    weighted objective (regularizers.Weights.total at this step)."""
    chunks = (jnp.arange(self.grad_cache_chunks), strided_split({k: batch[k] for k in TOKENS}, self.grad_cache_chunks))
    chunk_embeddings = lambda p, i, part: self.embeddings(module_of(p), part, dropout_of(i))
    q, d = strided_merge(jax.lax.map(lambda chunk: chunk_embeddings(params, *chunk), chunks))
    module = module_of(params)

    def objective_of(qf, df):
      loss, terms = self.objective(_filled(qf, q), _filled(df, d), batch, key, module)
      return total(loss, terms), terms
    value, (gq, gd) = jax.value_and_grad(objective_of, argnums=(0, 1), has_aux=True)(_floating(q), _floating(d))

    def backward(grads, part):
      chunk, cotangent = part
      _, vjp = jax.vjp(lambda p: _floating(chunk_embeddings(p, *chunk)), params)
      return jax.tree.map(jnp.add, grads, vjp(cotangent)[0]), None
    cotangents = strided_split((gq, gd), self.grad_cache_chunks)
    grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (chunks, cotangents))
    return value, grads
