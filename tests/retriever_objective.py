"""The trainer's objective for a loaded retriever, on a hand-made batch of texts (tests only)."""
import jax
import ml_collections
import numpy as np
from flax import nnx

from retrax.train import objective
from retrax.train.optimizer import make_optimizer
from retrax.train.step import StepBuilder
from retrax.train.tasks import Ranking

OPTIMIZER = dict(warmup_steps=0, total_steps=1, schedule="linear", learning_rate=1e-3, grad_clip_norm=1.0,
                 adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, weight_decay=0.0)


def batch(retriever, queries, documents, labels, query_positives=None) -> dict:
  """B queries with N candidate texts each ([B][N]), every row padded to its side's length; the
  candidates' document indices are 0 … B·N−1, each query's positive its first candidate by default."""
  b, n = len(documents), len(documents[0])
  query_ids, query_mask = retriever.text.tokenize(queries, "query")
  doc_ids, doc_mask = retriever.text.tokenize([d for row in documents for d in row], "document")
  doc_index = np.arange(b * n, dtype=np.int32).reshape(b, n)
  return dict(query_ids=query_ids, query_mask=query_mask, doc_ids=doc_ids.reshape(b, n, -1),
              doc_mask=doc_mask.reshape(b, n, -1), labels=np.asarray(labels, np.float32),
              candidate_mask=np.ones((b, n), bool), doc_index=doc_index,
              query_positives=doc_index[:, :1].copy() if query_positives is None else np.asarray(query_positives,
                                                                                                 np.int32))


def loss_and_grads(retriever, loss: dict, batch: dict):
  """((loss, regularizers), gradients) of the configured loss (config.loss's keys) without dropout."""
  task = Ranking(objective.loss_fn(ml_collections.ConfigDict(loss)), loss["in_batch_negatives"])
  builder = StepBuilder(retriever.graphdef, task, make_optimizer(ml_collections.ConfigDict(OPTIMIZER)), dropout=0.0)
  params, key = jax.tree.map(np.asarray, nnx.to_pure_dict(retriever.params)), jax.random.key(0)
  (value, (regularizers, _)), grads = jax.value_and_grad(builder.batch_loss, has_aux=True)(params, batch, key, key)
  return (value, regularizers), grads
