"""The training loop: one flat function, the same on one CPU, one GPU or every host of a TPU slice.

  retriever + training rows → grain pipeline → global sharded batch → jitted step → orbax

On SIGTERM it saves and exits cleanly; on restart it resumes from the latest complete
checkpoint, data iterator included, so the losses continue exactly.
"""
import logging
import pathlib
import time

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ..errors import InputError
from ..eval import beir
from ..eval.driver import evaluate_retriever
from ..models import checkpoint as retriever_checkpoint
from . import distributed, examples, mining
from .checkpoints import Checkpointer
from .mesh import make_mesh
from .metric_writer import MetricWriter
from .model_setup import build_retriever, data_folder
from .objective import loss_fn
from .optimizer import make_optimizer, schedule
from .pipeline import Pipeline, global_batch
from .preemption import StopSignal
from .step import StepBuilder, TrainState, initial_state


def check_config(config, mesh):
  rows_axis = mesh.shape["data"] * mesh.shape["fsdp"]
  parts = max(config.accumulate_steps, config.grad_cache_chunks, 1)
  if config.batch_size % (parts * rows_axis):
    raise InputError("config.batch_size", f"{config.batch_size} must be a multiple of accumulate_steps or "
                     f"grad_cache_chunks ({parts}) × mesh data·fsdp ({rows_axis})")
  if config.best_metric and not (config.eval.every and config.best_metric in config.eval.measures):
    raise InputError("config.best_metric", f"{config.best_metric!r} needs config.eval.every > 0 and to be one of "
                     f"config.eval.measures {tuple(config.eval.measures)}")
  if config.accumulate_steps > 1 and config.grad_cache_chunks:
    raise InputError("config", "use accumulate_steps or grad_cache_chunks, not both")


def evaluate_params(retriever, params, config, workdir, step) -> dict:
  """Process 0 evaluates the current parameters (gathered to every host) through the eval driver.

  `config` is config.eval; its data defaults to the training collection (its config.eval.split).
  """
  host_params = multihost_utils.process_allgather(params, tiled=True)
  results = {}
  if jax.process_index() == 0:
    results = evaluate_retriever(retriever.with_params(host_params), config, workdir / "eval" / str(step))
  if jax.process_count() > 1:
    names = list(config.measures)
    values = multihost_utils.broadcast_one_to_all(np.asarray([results.get(n, 0.0) for n in names], np.float64))
    results = dict(zip(names, map(float, values)))
  return results


def train(config, workdir) -> TrainState:
  workdir = pathlib.Path(workdir)
  distributed.initialize(config.distributed)
  is_main = jax.process_index() == 0
  mesh = make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  check_config(config, mesh)
  loss = loss_fn(config.loss)
  optimizer = make_optimizer(config)
  workdir.mkdir(parents=True, exist_ok=True)

  folder = data_folder(config.data, workdir)
  retriever = build_retriever(config.model, folder, config.data.split, config.dtype, seed=config.seed)
  for key in ("query_max_len", "doc_max_len"):
    if config.data[key] > retriever.max_positions:
      raise InputError(f"config.data.{key}", f"{config.data[key]} exceeds the model's {retriever.max_positions} positions")
  candidates = config.data.candidates
  if config.data.mine.enabled and not candidates:
    candidates = workdir / "negatives.jsonl"
    if not candidates.is_file():
      mining.mine_negatives(retriever, beir.load_collection(folder, config.data.split), candidates,
                            depth=config.data.mine.depth, skip_top=config.data.mine.skip_top,
                            batch_size=config.data.mine.batch_size, show_progress=config.progress and is_main)
  training_set = examples.build(folder, config.data.split, candidates or None, config.data.num_positives)
  if is_main:
    retriever_checkpoint.write_manifest(retriever, workdir)

  pipeline = Pipeline(training_set, retriever.batcher.tokenizer, retriever.batcher.pad_id, config.data,
                      retriever.settings, seed=config.seed, global_batch=config.batch_size,
                      process_index=jax.process_index(), process_count=jax.process_count())
  lr_schedule = schedule(config)
  builder = StepBuilder(retriever.graphdef, retriever.settings, loss, config.loss.in_batch_negatives,
                        optimizer, config.accumulate_steps, config.grad_cache_chunks)
  state = initial_state(jax.tree.map(np.asarray, nnx.to_pure_dict(retriever.params)), optimizer, mesh, rules,
                        retriever.params)
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  step_fn = jax.jit(builder, out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
                    donate_argnums=0)

  eval_config = config.eval.copy_and_resolve_references()
  eval_config.data = eval_config.data or str(folder)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, best_metric=config.best_metric or None,
                              best_mode=config.best_mode)
  iterator = pipeline.dataset.to_iter_dataset()
  data_iter = iter(iterator)
  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(state)
    data_iter.set_state(data_state)
    logging.warning("resumed from step %d", int(state.step))
  start = int(state.step)
  writer = MetricWriter(workdir, resume_step=start, enabled=is_main)
  stop = StopSignal()
  key = jax.random.key(config.seed)
  bar = tqdm(total=config.total_steps, initial=start, disable=not (config.progress and is_main), unit="step")
  window_start, window_examples = time.perf_counter(), 0
  for step in range(start, config.total_steps):
    batch = global_batch(next(data_iter), mesh, rules, config.data)
    state, metrics = step_fn(state, batch, key)
    window_examples += config.batch_size
    done = step + 1
    if done % config.log_every == 0 or done == config.total_steps:
      metrics = jax.device_get(metrics)
      elapsed = time.perf_counter() - window_start
      writer.write(done, {**metrics, "learning_rate": lr_schedule(step), "examples_per_s": window_examples / elapsed})
      bar.set_postfix(loss=f"{metrics['loss']:.4f}")
      window_start, window_examples = time.perf_counter(), 0
    bar.update(1)
    evaluated = None
    if config.eval.every and (done % config.eval.every == 0 or done == config.total_steps):
      evaluated = evaluate_params(retriever, state.params, eval_config, workdir, done)
      writer.write(done, {f"eval/{k}": v for k, v in evaluated.items()})
    stopping = stop.agreed()
    if done % config.checkpoint_every == 0 or done == config.total_steps or stopping or evaluated:
      checkpointer.save(state, data_iter.get_state(), config, metrics=evaluated)
    if stopping:
      logging.warning("SIGTERM: saved step %d, exiting", done)
      break
  bar.close()
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if is_main:
    print(training_set.summary())
  return state
