"""The pure train step: (state, batch, key) → (state, metrics), jitted over sharded global arrays.

The step knows no kind and no task: it merges the module (models/kinds) with the parameters and
the state beyond them, asks the task (tasks/) for its loss and the module's unweighted
regularizer terms, and differentiates

  objective = loss + Σ_r w_r(t)·term_r          (w_r from config.regularizers: regularizers.py)

with respect to the trainable parameters alone (trainable.py); the optimizer updates them, and
then the module's after_update() runs on the new parameters (an SAE's unit-norm decoder), inside
the step. Variables that are not nnx.Param (an SAE's dead-latent counters, a threshold) are
TrainState.model_state: the forward pass may update them, and they are sharded and checkpointed
beside the parameters.

metrics: the objective ("loss"), each regularizer term, the trainable gradients' global norm and
the updated parameters' global norm (the last two are what divergence.py checks).

Gradients come one of three ways, all equal up to float rounding: plain backprop through the
whole batch; the mean over `accumulate` micro-batches (every k-th row each, with the model state
threaded through them in order); or the task's GradCache (tasks/ranking.py).

Dropout draws from fold_in(step key, DROPOUT_STREAM), then from fold_in(·, i) for micro-batch
or chunk i.
"""
import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ..models.dropout import Dropout
from . import regularizers, sharding, trainable
from .batching import strided_split

DROPOUT_STREAM = 1  # the loss's own key (listwise losses that sample) stays the step key


@flax.struct.dataclass
class TrainState:
  params: Any
  opt_state: Any
  step: jax.Array
  model_state: Any = flax.struct.field(default_factory=dict)  # the module's variables that are not nnx.Param


def model_state_of(module: nnx.Module) -> dict:
  """The module's variables that are not parameters, as a pure dict."""
  return nnx.to_pure_dict(nnx.state(module, nnx.Not(nnx.Param)))


def params_of(module: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


@dataclasses.dataclass(frozen=True)
class StepBuilder:
  model: nnx.GraphDef         # the module's graph (nnx.split); merged with the parameters and model state
  task: Any                   # a tasks.Task
  optimizer: optax.GradientTransformation
  accumulate: int = 1
  dropout: float | None = None  # None: the backbone config's rates; else this rate at every site
  trainable_paths: str = trainable.EVERYTHING  # trainable.py: the parameters that train
  weights: regularizers.Weights = dataclasses.field(default_factory=regularizers.Weights)

  def module(self, params, frozen=None, model_state=None) -> nnx.Module:
    """The module with `params` (the trainable part when `frozen` holds the rest) and `model_state`."""
    whole = trainable.combine(params, frozen) if frozen else params
    return nnx.merge(self.model, trainable.combine(whole, model_state) if model_state else whole)

  def batch_loss(self, params, batch, key, dropout_key, frozen=None, model_state=None, step=0):
    """(objective, (regularizer terms, the model state after the forward pass))."""
    module = self.module(params, frozen, model_state)
    loss, terms = self.task.terms(module, batch, key, Dropout(dropout_key, self.dropout))
    return self.weights.total(loss, terms, step), (terms, model_state_of(module))

  def plain_grads(self, params, batch, key, dropout_key, frozen=None, model_state=None, step=0):
    """((objective, (terms, model state)), grads) of the batch, or their means over `accumulate` micro-batches."""
    value_and_grad = jax.value_and_grad(self.batch_loss, has_aux=True)
    model_state = {} if model_state is None else model_state
    if self.accumulate == 1:
      return value_and_grad(params, batch, key, dropout_key, frozen, model_state, step)

    def micro(carry, part):
      total, state = carry
      i, part = part
      (loss, (terms, state)), grads = value_and_grad(params, part, key, jax.random.fold_in(dropout_key, i), frozen,
                                                     state, step)
      return (jax.tree.map(jnp.add, total, (loss, terms, grads)), state), None
    parts = (jnp.arange(self.accumulate), strided_split(batch, self.accumulate))
    (_, (terms, _)), grads = jax.eval_shape(lambda: value_and_grad(
        params, jax.tree.map(lambda x: x[0], parts[1]), key, dropout_key, frozen, model_state, step))
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (jax.ShapeDtypeStruct((), jnp.float32), terms, grads))
    ((loss, terms, grads), state), _ = jax.lax.scan(micro, (zero, model_state), parts)
    loss, terms, grads = jax.tree.map(lambda x: x / self.accumulate, (loss, terms, grads))
    return (loss, (terms, state)), grads

  def grad_cache_grads(self, params, batch, key, dropout_key, frozen=None, model_state=None, step=0):
    """The task's GradCache (tasks/ranking.py); the model state passes through unchanged."""
    (loss, terms), grads = self.task.grad_cache(
        lambda p: self.module(p, frozen, model_state), params, batch, key,
        lambda i: Dropout(jax.random.fold_in(dropout_key, i), self.dropout),
        lambda loss, terms: self.weights.total(loss, terms, step))
    return (loss, (terms, model_state)), grads

  def after_update(self, params, model_state):
    """The parameters after the module's after_update() (when it has one)."""
    module = self.module(params, None, model_state)
    hook = getattr(module, "after_update", None)
    if hook is None:
      return params
    hook()
    return params_of(module)

  def __call__(self, state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    grad_cache = getattr(self.task, "grad_cache_chunks", 0)
    grads_fn = self.grad_cache_grads if grad_cache else self.plain_grads
    params, frozen = trainable.split(state.params, self.trainable_paths)
    (loss, (terms, model_state)), grads = grads_fn(params, batch, key, jax.random.fold_in(key, DROPOUT_STREAM),
                                                    frozen, state.model_state, state.step)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
    params = self.after_update(trainable.combine(optax.apply_updates(params, updates), frozen), model_state)
    metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
    return TrainState(params, opt_state, state.step + 1, model_state), metrics


def initial_state(module: nnx.Module, optimizer, mesh, rules, trainable_paths: str = trainable.EVERYTHING) -> TrainState:
  """The module's parameters and model state placed by the sharding rules, and optimizer state for
  the trainable part alone."""
  replicated = NamedSharding(mesh, PartitionSpec())
  param_state, other_state = nnx.state(module, nnx.Param, nnx.Not(nnx.Param))
  param_shardings = sharding.param_shardings(param_state, mesh, rules)
  params = jax.device_put(nnx.to_pure_dict(param_state), param_shardings)
  model_state = jax.device_put(nnx.to_pure_dict(other_state), sharding.param_shardings(other_state, mesh, rules))
  train, _ = trainable.split(params, trainable_paths)
  train_shardings, _ = trainable.split(param_shardings, trainable_paths)
  opt_shardings = optax.tree_map_params(
      optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, train), train_shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(train)
  return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), replicated), model_state)
