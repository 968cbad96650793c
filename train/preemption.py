"""Preemption: a SIGTERM (as a Cloud TPU VM receives before it is taken) asks the loop to save and stop."""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopSignal:
  """Set by SIGTERM; agreed on by every host before anyone acts on it."""

  def __init__(self):
    self.received = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def agreed(self) -> bool:
    if jax.process_count() == 1:
      return self.received
    return bool(multihost_utils.process_allgather(np.int32(self.received)).max())
