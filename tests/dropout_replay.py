"""Replaying retrax's dropout masks in transformers: every torch dropout call, in call order, multiplies
by the next mask that a recording `Dropout` drew. Equal outputs then show the same sites, in the
same order, with the same scaling."""
import contextlib

import numpy as np
import torch

from retrax.models.dropout import Dropout


class RecordingDropout(Dropout):

  def __init__(self, key, rate=None):
    super().__init__(key, rate)
    self.masks = []

  def mask(self, shape, configured_rate, rows=None):
    drawn = super().mask(shape, configured_rate, rows)
    if drawn is not None:
      self.masks.append(np.asarray(drawn.multiplier()))
    return drawn


@contextlib.contextmanager
def replaying(masks):
  pending = iter(masks)
  original = torch.nn.functional.dropout

  def dropout(input, p=0.5, training=True, inplace=False):
    if not training or p == 0:
      return input
    mask = torch.tensor(next(pending))
    # retrax's layers see tokens as [B·L, H]: the same elements in the same row-major order
    assert mask.shape[-1] == input.shape[-1] and mask.numel() == input.numel(), \
        f"mask {tuple(mask.shape)} for a dropout on {tuple(input.shape)}"
    return input * mask.reshape(input.shape)
  torch.nn.functional.dropout = dropout
  try:
    yield
    assert next(pending, None) is None, "retrax drew more dropout masks than transformers used"
  finally:
    torch.nn.functional.dropout = original
