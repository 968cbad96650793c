"""Divergence stops training at the first step whose loss, gradient norm or updated parameters are not finite.

The loop reads a step's metrics, to check and log them, after dispatching the next step, so
neither leaves the device idle; before evaluating or saving it reads that step itself. The check
comes before the log, so no non-finite value reaches metrics.jsonl, no checkpoint holds one,
and no finite checkpoint is rotated out by a later, diverged one.
"""
import math

import jax

from ..errors import Diverged

CHECKED = (("loss", "the loss"), ("grad_norm", "the gradient norm"),
           ("param_norm", "the norm of the parameters after the update"))


class DivergenceCheck:

  def __init__(self, learning_rates, checkpointer):
    self.learning_rates = learning_rates  # of each step, counted from 0
    self.checkpointer = checkpointer

  def __call__(self, step: int, metrics: dict) -> dict:
    """The metrics of `step` (counted from 1) on the host; Diverged at the first non-finite one."""
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    for key, what in CHECKED:
      if not math.isfinite(host[key]):
        saved = self.checkpointer.steps()
        last = f"the newest checkpoint is step {saved[-1]}" if saved else "no checkpoint was saved"
        raise Diverged(f"step {step}: {what} is {host[key]} (learning rate {float(self.learning_rates[step - 1]):.3g}); "
                       f"training stopped, {last}")
    return host
