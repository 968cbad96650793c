"""From a batch's representations to the loss: the candidates' score matrix, its labels and mask.

A batch holds B queries with C candidates each (positive slots first, then negatives):
representations q (leading dim B) and d (leading dims [B, C]), labels [B, C], mask [B, C]. The
retriever scores them (dense: ⟨q, d⟩). Without in-batch negatives each query is scored against
its own candidates, scores [B, C]. With them, against every candidate of the global batch, in
candidate-major order so that the first B columns are the queries' first positives (the layout
of sentence-transformers' MultipleNegativesRankingLoss):

  scores[b, c·B + j] = score(q_b, d_{j,c}),   labels[b, c·B + j] = labels[b, c]·[b = j],
  mask[b, c·B + j] = mask[j, c] ∧ ¬(j ≠ b ∧ doc(j, c) ∈ positives(query b)),

so another query's candidate that is relevant to query b is never used as its negative.
"""
import inspect

import jax
import jax.numpy as jnp

from .. import checks
from ..errors import InputError
from . import losses


def candidate_scores(q, d, in_batch: bool, score):
  """The retriever's score(queries, documents) → [Bq, Nd] laid out as above: [B, C·B]
  (in-batch) or [B, C] (own candidates only).

  q and d are the kind's representations (pytrees): q's leaves lead with B, d's with [B, C].
  """
  if not in_batch:
    return jax.vmap(lambda qb, db: score(jax.tree.map(lambda x: x[None], qb), db)[0])(q, d)
  b, c = jax.tree.leaves(d)[0].shape[:2]
  candidate_major = jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(c * b, *x.shape[2:]), d)
  return score(q, candidate_major)


def candidate_targets(batch, in_batch: bool):
  """(labels, mask) laid out as candidate_scores lays out the scores."""
  labels, mask = batch["labels"], batch["candidate_mask"]
  if not in_batch:
    return labels, mask
  b, c = labels.shape
  own = jnp.eye(b, dtype=bool)[:, None, :]                                     # [b, 1, j]
  relevant = (batch["doc_index"].T[None, :, :, None] == batch["query_positives"][:, None, None, :]).any(-1)
  full_labels = jnp.where(own, labels[:, :, None], 0.0)
  full_mask = mask.T[None] & (own | ~relevant)                                  # [b, c, j]
  return full_labels.reshape(b, c * b), full_mask.reshape(b, c * b)


def loss_fn(loss_config):
  """The configured loss as f(scores, labels, mask, key) -> scalar; hyperparameters checked up front."""
  hparams = {k: v for k, v in loss_config.items() if k not in ("name", "in_batch_negatives")}
  if loss_config.name not in losses.LOSSES:
    raise InputError("config.loss.name", f"{loss_config.name!r} is not one of {sorted(losses.LOSSES)}")
  fn = losses.LOSSES[loss_config.name]
  params = inspect.signature(fn).parameters
  unknown = sorted(set(hparams) - set(params))
  if unknown:
    raise InputError("config.loss", f"{loss_config.name} takes no {unknown}; it takes {list(params)[3:]}")
  for key, value in hparams.items():
    if key.endswith("temperature"):  # scores are divided by it
      checks.number(value, f"config.loss.{key}", above=0)
    elif isinstance(params[key].default, bool) and not isinstance(value, bool):
      raise InputError(f"config.loss.{key}", f"expected true or false, got {value!r}")
  needs_key = "key" in params

  def apply(scores, labels, mask, key):
    return fn(scores, labels, mask, **hparams, **({"key": key} if needs_key else {}))
  return apply
