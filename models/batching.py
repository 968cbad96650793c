"""Texts to fixed-shape token batches: sorted by length, padded to a few length buckets.

Every batch has `batch_size` rows and a length from `buckets`, so a jitted encoder
compiles once per bucket and never per batch.
"""
import dataclasses

import numpy as np
import tokenizers

from ..errors import InputError


def default_buckets(max_length: int) -> tuple[int, ...]:
  """Powers of two and their midpoints from 16 up to max_length, which is always the last."""
  sizes = {16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192}
  return tuple(sorted({s for s in sizes if s < max_length} | {max_length}))


def check_texts(texts) -> list[str]:
  """`texts` as a list, every item a string; anything else is an InputError naming the position."""
  if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
    raise InputError("texts", f"expected a list of strings, got {type(texts).__name__}")
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise InputError(f"texts[{i}]", f"expected a string, got {type(text).__name__}")
  return texts


def check_max_length(value, positions: int, source) -> int:
  """The length texts are truncated to: `value`, or the model's `positions` when it is None.

  The same rule for training and encoding: 1 ≤ max_length ≤ positions, else an InputError
  naming `source` (a config key, a settings file or the model folder).
  """
  if value is None:
    return positions
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= positions:
    raise InputError(source, f"max_length {value!r}: expected an integer from 1 to {positions}, the number of "
                             "positions the model's embeddings have")
  return int(value)


@dataclasses.dataclass(frozen=True)
class Batch:
  rows: np.ndarray        # [n] positions of the real rows in the caller's list
  input_ids: np.ndarray   # [batch_size, bucket] int32
  attention_mask: np.ndarray
  token_type_ids: np.ndarray


class TextBatcher:
  """Wraps a `tokenizers.Tokenizer`: truncation to max_length, padding done here."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, max_length: int, pad_id: int, buckets=None):
    self.tokenizer = tokenizer
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(max_length)
    self.max_length = max_length
    self.pad_id = pad_id
    self.buckets = tuple(buckets or default_buckets(max_length))

  def tokenize(self, texts):
    return self.tokenizer.encode_batch(list(texts))

  def batches(self, texts, batch_size: int):
    """Yields Batch objects, longest texts first; rows map back to the input order."""
    encodings = self.tokenize(texts)
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      width = next(b for b in self.buckets if b >= lengths[rows].max())
      ids = np.full((batch_size, width), self.pad_id, np.int32)
      types = np.zeros((batch_size, width), np.int32)
      mask = np.zeros((batch_size, width), np.int32)
      for r, i in enumerate(rows):
        e = encodings[i]
        ids[r, :len(e.ids)] = e.ids
        types[r, :len(e.ids)] = e.type_ids
        mask[r, :len(e.ids)] = 1
      yield Batch(rows, ids, mask, types)
