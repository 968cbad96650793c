"""The training loop: one flat function, the same on one CPU, one GPU or every host of a TPU slice.

  model + training rows → grain pipeline → global sharded batch → jitted step (the model's task) → orbax

The task follows the model (tasks.for_model): retrievers train on ranking, rerankers on pairs,
models over a frozen retriever on reconstruction.

On SIGTERM it saves and exits cleanly; on restart it resumes from the newest readable
checkpoint, data iterator included, so the losses continue exactly. A restart first checks
its config against the saved one (resume.py) and writes nothing in the workdir until the
restore has succeeded. The first non-finite loss, gradient norm or parameter stops the run
with an error (divergence.py).
"""
import logging
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from .. import ops
from ..eval import beir
from ..eval.driver import evaluate_retriever
from ..files import check_folder
from ..errors import InputError
from ..models import checkpoint as model_checkpoint
from ..models.retriever import Retriever
from ..models.text import check_max_length
from ..workdirs import TrainWorkdir
from . import config_check, distributed, examples, mining, resume, tasks, trainable
from .checkpoints import Checkpointer
from .divergence import DivergenceCheck
from .mesh import make_mesh
from .metric_writer import MetricWriter
from .model_setup import build_model, data_folder
from .optimizer import make_optimizer, schedule
from .pipeline import Pipeline, global_batch
from .preemption import StopSignal
from .regularizers import Weights
from .step import StepBuilder, TrainState, initial_state, params_of


def evaluate_params(retriever, params, config, workdir, step) -> dict:
  """Process 0 evaluates the current parameters and model state (gathered to every host) through the eval driver.

  `config` is config.eval; its data defaults to the training collection (its config.eval.split).
  """
  host_params = multihost_utils.process_allgather(params, tiled=True)
  results = {}
  if jax.process_index() == 0:
    results = evaluate_retriever(retriever.with_params(host_params), config, workdir.eval(step))
  if jax.process_count() > 1:
    names = list(config.measures)
    values = multihost_utils.broadcast_one_to_all(np.asarray([results.get(n, 0.0) for n in names], np.float64))
    results = dict(zip(names, map(float, values)))
  return results


def train(config, workdir) -> TrainState:
  workdir = TrainWorkdir(check_folder(workdir))
  distributed.initialize(config.distributed)
  mesh = make_mesh(config.mesh)
  config_check.check(config, mesh)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric=config.best_metric or None,
                              best_mode=config.best_mode)
  try:
    return _train(config, workdir, mesh, checkpointer)
  finally:
    checkpointer.close()


def _train(config, workdir, mesh, checkpointer) -> TrainState:
  is_main = jax.process_index() == 0
  rules = tuple(tuple(r) for r in config.sharding_rules)
  optimizer = make_optimizer(config)
  saved = checkpointer.saved_config()
  if saved is not None:
    resume.check(saved[1], config, checkpointer.directory / str(saved[0]))

  folder = data_folder(config.data, workdir.generated_data)
  model = build_model(config.model, folder, config.data.split, config.dtype, seed=config.seed)
  for key in ("query_max_len", "doc_max_len"):
    check_max_length(config.data[key], model.max_positions, f"config.data.{key}")
  task = tasks.for_model(model.module, config, getattr(model, "max_length", None))
  retrieves = isinstance(model, Retriever)
  if not retrieves and (config.data.mine.enabled or config.eval.every):
    key = "data.mine.enabled" if config.data.mine.enabled else "eval.every"
    raise InputError(f"config.{key}", f"retrieves with the model being trained, and a {model.kind.name!r} model "
                     "does not retrieve; set it off (evaluate a reranker with python -m retrax.eval "
                     "--config.rerank.model)")
  candidates = config.data.candidates
  if config.data.mine.enabled and not candidates:
    candidates = workdir.negatives
    if not candidates.is_file():
      mining.mine_negatives(model, beir.load_collection(folder, config.data.split), candidates,
                            depth=config.data.mine.depth, skip_top=config.data.mine.skip_top,
                            batch_size=config.data.mine.batch_size, show_progress=config.progress and is_main)
  training_set = examples.build(folder, config.data.split, candidates or None, config.data.num_positives)

  pipeline = Pipeline(training_set, model.text, config.data, seed=config.seed, global_batch=config.batch_size,
                      process_index=jax.process_index(), process_count=jax.process_count(), task=task)
  # on the host, so that logging a step does not wait behind the step dispatched after it
  learning_rates = np.asarray(jax.vmap(schedule(config))(np.arange(config.total_steps)))
  trainable.check(params_of(model.module), config.model.trainable)
  builder = StepBuilder(model.graphdef, task, optimizer, config.accumulate_steps, config.model.dropout,
                        config.model.trainable, Weights(config.regularizers))
  state = initial_state(model.module, optimizer, mesh, rules, config.model.trainable)
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  step_fn = ops.jit(builder, out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
                         donate_argnums=0)

  eval_config = config.eval.copy_and_resolve_references()
  eval_config.data = eval_config.data or str(folder)
  if config.eval.every:  # the collection's and the index settings' errors now, not after the first steps
    eval_docs = len(beir.load_collection(eval_config.data, eval_config.split).corpus)
    model.kind.check_index(eval_config.index, eval_docs, "config.eval.index")
  data_iter = iter(pipeline.dataset.to_iter_dataset())
  unpad = task.unpadded if config.data.unpad and config.accumulate_steps == 1 and not config.grad_cache_chunks else ()
  if saved is not None:
    state, data_state = checkpointer.restore(state)
    data_iter.set_state(data_state)
    logging.warning("resumed from step %d", int(state.step))
  if is_main:
    model_checkpoint.write_manifest(model, workdir.root)
  start = int(state.step)
  if start >= config.total_steps:
    logging.warning("the checkpoint is at step %d and config.total_steps is %d: nothing to train", start,
                    config.total_steps)
  writer = MetricWriter(workdir, resume_step=start, enabled=is_main)
  finite = DivergenceCheck(learning_rates, checkpointer)
  stop = StopSignal()
  key = jax.random.key(config.seed)
  bar = tqdm(total=config.total_steps, initial=start, disable=not (config.progress and is_main), unit="step")
  window_start, window_examples = time.perf_counter(), 0

  def report(done: int, metrics: dict, logging_now: bool) -> None:
    """Checks step `done`'s metrics (divergence.py), and writes them on a logging step."""
    nonlocal window_start, window_examples
    host = finite(done, metrics)
    window_examples += config.batch_size
    if logging_now:
      elapsed = time.perf_counter() - window_start
      writer.write(done, {**host, "learning_rate": learning_rates[done - 1], "examples_per_s": window_examples / elapsed})
      bar.set_postfix(loss=f"{host['loss']:.4f}")
      window_start, window_examples = time.perf_counter(), 0

  pending = None  # (done, metrics, logging) of the step dispatched before this one: read after the next dispatch
  try:
    for step in range(start, config.total_steps):
      batch = global_batch(next(data_iter), mesh, rules, pipeline.buckets, unpad)
      state, metrics = step_fn(state, batch, key)
      if pending:
        report(*pending)
      done = step + 1
      bar.update(1)
      stopping = stop.agreed()
      evaluating = config.eval.every and (done % config.eval.every == 0 or done == config.total_steps)
      logging_now = done % config.log_every == 0 or done == config.total_steps
      saving = done % config.checkpoint_every == 0 or done == config.total_steps or stopping or evaluating
      pending = (done, metrics, logging_now)
      if not (evaluating or saving):
        continue
      report(*pending)
      pending = None
      evaluated = None
      if evaluating:
        evaluated = evaluate_params(model, trainable.combine(state.params, state.model_state), eval_config,
                                    workdir, done)
        writer.write(done, {f"eval/{k}": v for k, v in evaluated.items()})
      if saving:
        checkpointer.save(state, data_iter.get_state(), config, metrics=evaluated)
      if stopping:
        logging.warning("SIGTERM: saved step %d, exiting", done)
        break
  finally:
    bar.close()
    checkpointer.wait()
    writer.close()
  if is_main:
    print(training_set.summary())
  return state
