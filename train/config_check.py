"""Every value of a training config checked before anything is built, read or written.

Each error is one InputError naming the key (`config.learning_rate: expected a finite number
> 0, got inf`). The loss's own hyperparameters are checked by objective.loss_fn, and the
evaluation keys by eval.driver.check_config when periodic evaluation is on.
"""
from .. import checks
from ..errors import InputError
from ..eval.driver import check_config as check_eval_config
from . import regularizers
from .model_setup import setting_overrides
from .trainable import compile_pattern

DTYPES = ("float32", "bfloat16")  # compute dtypes; parameters stay float32

POSITIVE = ("total_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "accumulate_steps",
            "data.num_positives", "data.query_max_len", "data.doc_max_len", "data.mine.depth", "data.mine.batch_size")
NON_NEGATIVE = ("seed", "warmup_steps", "grad_cache_chunks", "data.num_negatives", "data.mine.skip_top", "eval.every")


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def check(config, mesh) -> None:
  for key in POSITIVE:
    checks.integer(_get(config, key), f"config.{key}", low=1)
  for key in NON_NEGATIVE:
    checks.integer(_get(config, key), f"config.{key}", low=0)
  checks.number(config.learning_rate, "config.learning_rate", above=0)
  checks.number(config.grad_clip_norm, "config.grad_clip_norm", above=0)
  checks.number(config.weight_decay, "config.weight_decay", at_least=0)
  checks.number(config.adam_b1, "config.adam_b1", at_least=0, below=1)
  checks.number(config.adam_b2, "config.adam_b2", at_least=0, below=1)
  checks.number(config.adam_eps, "config.adam_eps", above=0)
  setting_overrides(config.model)
  regularizers.check(config.regularizers)
  compile_pattern(config.model.trainable)
  if config.model.dropout is not None:
    checks.number(config.model.dropout, "config.model.dropout", at_least=0, below=1)
  checks.choice(config.schedule, "config.schedule", ("linear", "cosine"))
  checks.choice(config.dtype, "config.dtype", DTYPES)
  checks.choice(config.best_mode, "config.best_mode", ("max", "min"))
  checks.choice(config.data.unpad, "config.data.unpad", (True, False))
  for side in ("query", "doc"):
    buckets, longest = config.data[f"{side}_buckets"], config.data[f"{side}_max_len"]
    for i, size in enumerate(buckets):
      checks.integer(size, f"config.data.{side}_buckets[{i}]", low=1, high=longest)
    if buckets and max(buckets) != longest:
      raise InputError(f"config.data.{side}_buckets", f"the largest bucket must be {side}_max_len ({longest}), "
                       f"got {tuple(buckets)}")
  rows_axis = mesh.shape["data"] * mesh.shape["fsdp"]
  parts = max(config.accumulate_steps, config.grad_cache_chunks, 1)
  if config.batch_size % (parts * rows_axis):
    raise InputError("config.batch_size", f"{config.batch_size} must be a multiple of accumulate_steps or "
                     f"grad_cache_chunks ({parts}) × mesh data·fsdp ({rows_axis})")
  if config.accumulate_steps > 1 and config.grad_cache_chunks:
    raise InputError("config", "use accumulate_steps or grad_cache_chunks, not both")
  if config.best_metric and not (config.eval.every and config.best_metric in config.eval.measures):
    raise InputError("config.best_metric", f"{config.best_metric!r} needs config.eval.every > 0 and to be one of "
                     f"config.eval.measures {tuple(config.eval.measures)}")
  if config.eval.every:
    check_eval_config(config.eval, "config.eval")
    if config.eval.rerank.model:
      raise InputError("config.eval.rerank.model", "periodic evaluation scores the retriever being trained; "
                       "leave it empty")
    if config.eval.first_stage:
      raise InputError("config.eval.first_stage", "periodic evaluation retrieves with the model being trained; "
                       "leave it empty")
