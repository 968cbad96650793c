"""The pure train step: (state, batch, key) → (state, metrics), jitted over sharded global arrays.

The step knows no kind: it merges the retriever module (models/kinds) with the parameters and
calls its protocol, encode(tokens, side) for the representations, score(q, d) for the
candidates' scores and regularizers(q, d) for terms added to the loss:

  objective = loss(scores, labels, mask) + Σ regularizers(q, d).

metrics: the loss (with the regularizers), each regularizer, the trainable gradients' global
norm and the updated parameters' global norm (the last two are what divergence.py checks: a
non-finite parameter makes its norm non-finite). Only the parameters that `trainable_paths`
matches are differentiated and updated (trainable.py).

Gradients come one of three ways, all equal up to float rounding:
  - plain backprop through the whole batch;
  - accumulation over `accumulate` micro-batches (each with its own in-batch negatives);
  - GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
    Limited Setup"): embed the batch in chunks without keeping activations, take the loss
    and ∂L/∂embeddings on the full batch, then re-run each chunk under jax.vjp with those
    cotangents (pytrees shaped like the kind's representations), so activation memory is one
    chunk's while negatives span the whole batch.
Micro-batches and chunks take every k-th row, so each holds rows from every device.

Dropout draws from fold_in(step key, DROPOUT_STREAM), then from fold_in(·, i) for micro-batch
or chunk i: GradCache's replay of a chunk under jax.vjp draws the masks of its first pass.
"""
import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ..models.dropout import Dropout
from . import objective, sharding, trainable

DROPOUT_STREAM = 1  # the loss's own key (listwise losses that sample) stays the step key


@flax.struct.dataclass
class TrainState:
  params: Any
  opt_state: Any
  step: jax.Array


def strided_split(tree, k: int):
  """Leading dim B → [k, B/k]; part i holds rows i, i+k, i+2k, …"""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), tree)


def strided_merge(tree):
  return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(-1, *x.shape[2:]), tree)


def _floating(tree):
  """The representation's floating leaves, the others (masks) None: what GradCache differentiates."""
  return jax.tree.map(lambda x: x if jnp.issubdtype(x.dtype, jnp.floating) else None, tree)


def _filled(floating, tree):
  """`floating` with its None leaves taken from `tree`."""
  return jax.tree.map(lambda f, x: x if f is None else f, floating, tree, is_leaf=lambda v: v is None)


@dataclasses.dataclass(frozen=True)
class StepBuilder:
  model: nnx.GraphDef         # the retriever module's graph (nnx.split); merged with the parameters
  loss: Callable              # objective.loss_fn(config.loss)
  in_batch: bool
  optimizer: optax.GradientTransformation
  accumulate: int = 1
  grad_cache_chunks: int = 0  # 0: off; else the number of chunks
  dropout: float | None = None  # None: the backbone config's rates; else this rate at every site
  trainable_paths: str = trainable.EVERYTHING  # trainable.py: the parameters that train

  def module(self, params, frozen=None) -> nnx.Module:
    """The retriever with `params` (the trainable part when `frozen` holds the rest)."""
    return nnx.merge(self.model, trainable.combine(params, frozen) if frozen else params)

  def embeddings(self, module, batch, dropout_key):
    """The representations of a batch's B queries and of their [B, C] candidates; dropout from
    `dropout_key`; a side with a pack index (pipeline.global_batch) runs unpadded."""
    dropout = Dropout(dropout_key, self.dropout)
    b, c, l = batch["doc_ids"].shape
    q = module.encode({"input_ids": batch["query_ids"], "attention_mask": batch["query_mask"]}, "query",
                      packing=batch.get("query_pack"), dropout=dropout)
    d = module.encode({"input_ids": batch["doc_ids"].reshape(b * c, l),
                       "attention_mask": batch["doc_mask"].reshape(b * c, l)}, "document",
                      packing=batch.get("doc_pack"), dropout=dropout)
    return q, jax.tree.map(lambda x: x.reshape(b, c, *x.shape[1:]), d)

  def objective(self, q, d, batch, key, module):
    """(loss + Σ regularizers, the regularizers) of a batch's representations."""
    scores = objective.candidate_scores(q, d, self.in_batch, module.score).astype(jnp.float32)
    labels, mask = objective.candidate_targets(batch, self.in_batch)
    regularizers = module.regularizers(q, d)
    return self.loss(scores, labels, mask, key) + sum(regularizers.values()), regularizers

  def batch_loss(self, params, batch, key, dropout_key, frozen=None):
    module = self.module(params, frozen)
    return self.objective(*self.embeddings(module, batch, dropout_key), batch, key, module)

  def plain_grads(self, params, batch, key, dropout_key, frozen=None):
    """((loss, regularizers), grads) of the batch, or their means over `accumulate` micro-batches."""
    value_and_grad = jax.value_and_grad(self.batch_loss, has_aux=True)
    if self.accumulate == 1:
      return value_and_grad(params, batch, key, dropout_key, frozen)

    def micro(carry, part):
      i, part = part
      return jax.tree.map(jnp.add, carry, value_and_grad(params, part, key, jax.random.fold_in(dropout_key, i),
                                                          frozen)), None
    parts = (jnp.arange(self.accumulate), strided_split(batch, self.accumulate))
    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: value_and_grad(
        params, jax.tree.map(lambda x: x[0], parts[1]), key, dropout_key, frozen)))
    total, _ = jax.lax.scan(micro, zero, parts)
    return jax.tree.map(lambda x: x / self.accumulate, total)

  def grad_cache_grads(self, params, batch, key, dropout_key, frozen=None):
    tokens = ("query_ids", "query_mask", "doc_ids", "doc_mask")
    chunks = (jnp.arange(self.grad_cache_chunks),
              strided_split({k: batch[k] for k in tokens}, self.grad_cache_chunks))
    chunk_embeddings = lambda p, i, part: self.embeddings(self.module(p, frozen), part,
                                                          jax.random.fold_in(dropout_key, i))
    q, d = strided_merge(jax.lax.map(lambda chunk: chunk_embeddings(params, *chunk), chunks))
    module = self.module(params, frozen)
    objective_of = lambda qf, df: self.objective(_filled(qf, q), _filled(df, d), batch, key, module)
    value, (gq, gd) = jax.value_and_grad(objective_of, argnums=(0, 1), has_aux=True)(_floating(q), _floating(d))

    def backward(grads, part):
      chunk, cotangent = part
      _, vjp = jax.vjp(lambda p: _floating(chunk_embeddings(p, *chunk)), params)
      return jax.tree.map(jnp.add, grads, vjp(cotangent)[0]), None
    cotangents = strided_split((gq, gd), self.grad_cache_chunks)
    grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (chunks, cotangents))
    return value, grads

  def __call__(self, state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    grads_fn = self.grad_cache_grads if self.grad_cache_chunks else self.plain_grads
    params, frozen = trainable.split(state.params, self.trainable_paths)
    (loss, regularizers), grads = grads_fn(params, batch, key, jax.random.fold_in(key, DROPOUT_STREAM), frozen)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
    params = trainable.combine(optax.apply_updates(params, updates), frozen)
    metrics = {"loss": loss, **regularizers, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
    return TrainState(params, opt_state, state.step + 1), metrics


def initial_state(params, optimizer, mesh, rules, param_state,
                  trainable_paths: str = trainable.EVERYTHING) -> TrainState:
  """Parameters placed by the sharding rules, and optimizer state for the trainable part alone."""
  replicated = NamedSharding(mesh, PartitionSpec())
  param_shardings = sharding.param_shardings(param_state, mesh, rules)
  params = jax.device_put(params, param_shardings)
  train, _ = trainable.split(params, trainable_paths)
  train_shardings, _ = trainable.split(param_shardings, trainable_paths)
  opt_shardings = optax.tree_map_params(
      optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, train), train_shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(train)
  return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), replicated))
