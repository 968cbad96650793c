"""Regularizer weights and their schedules, from config.regularizers (not from the kind's code).

A module's regularizers(…) return unweighted terms by name; the step adds Σ_r w_r(t)·term_r to
the task's loss, at optimizer step t (0-based, the step being taken):

  quadratic:  w_r(t) = λ_r · min(1, t / T_r)²   (SPLADE's FLOPS warm-up: Formal et al., 2021;
                                               naver/splade's RegWeightScheduler)
  linear:     w_r(t) = λ_r · min(1, t / T_r)    (an SAE's L1 warm-up: SAELens, dictionary_learning)

T_r = 0 is the constant λ_r. config.regularizers.<name> is {weight: λ, warmup_steps: T,
shape: "quadratic" | "linear"}; a term that the config does not name has weight 1.
"""
import jax.numpy as jnp

from .. import checks
from ..errors import InputError

KEYS = ("weight", "warmup_steps", "shape")
SHAPES = {"quadratic": 2, "linear": 1}  # the power of min(1, t/T)


def check(config) -> None:
  """config.regularizers: each entry {weight ≥ 0, warmup_steps ≥ 0, shape} and nothing else."""
  for name, entry in config.items():
    where = f"config.regularizers.{name}"
    if not hasattr(entry, "items"):
      raise InputError(where, f"expected {{weight: λ, warmup_steps: T, shape: quadratic|linear}}, got {entry!r}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
      raise InputError(f"{where}.{unknown[0]}", f"not a key of a regularizer; its keys are {', '.join(KEYS)}")
    checks.number(entry.get("weight", 1.0), f"{where}.weight", at_least=0)
    checks.integer(entry.get("warmup_steps", 0), f"{where}.warmup_steps", low=0)
    checks.choice(entry.get("shape", "quadratic"), f"{where}.shape", tuple(SHAPES))


class Weights:
  """w_r(t) for the terms a module returns."""

  def __init__(self, config=None):
    config = {} if config is None else config
    self.schedules = {name: (float(entry.get("weight", 1.0)), int(entry.get("warmup_steps", 0)),
                             SHAPES[entry.get("shape", "quadratic")]) for name, entry in config.items()}

  def weight(self, name: str, step):
    weight, warmup, power = self.schedules.get(name, (1.0, 0, 1))
    if not warmup:
      return jnp.float32(weight)
    return weight * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup) ** power

  def total(self, loss, terms: dict, step):
    """loss + Σ w_r(step)·term_r; a configured name that the module does not return is an InputError."""
    missing = sorted(set(self.schedules) - set(terms))
    if missing:
      raise InputError(f"config.regularizers.{missing[0]}", "the model returns no such regularizer; it returns "
                                                            f"{', '.join(sorted(terms)) or 'none'}")
    return loss + sum((self.weight(name, step) * term for name, term in terms.items()), jnp.float32(0))
