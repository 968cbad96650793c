"""AdamW with linear warmup, then linear or cosine decay to zero; global-norm clipping.

Weight decay applies to kernels and embeddings, not to norm scales or biases (as BERT and
sentence-transformers fine-tune).
"""
import jax
import optax

from ..errors import InputError

NO_DECAY = ("bias", "scale")


def schedule(config) -> optax.Schedule:
  warmup = int(config.warmup_steps)
  decay_steps = max(int(config.total_steps) - warmup, 1)
  if config.schedule == "linear":
    decay = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
  elif config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
  else:
    raise InputError("config.schedule", f"{config.schedule!r}: expected 'linear' or 'cosine'")
  return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), decay], [warmup])


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: str(path[-1].key) not in NO_DECAY, params)


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(schedule(config), b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                  weight_decay=config.weight_decay, mask=decay_mask))
