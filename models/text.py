"""The one text path: texts to right-padded int32 token arrays, the same for training and encoding.

A side ("query" or "document") prefixes its prompt; the tokenizer truncates to the side's
max_length, keeping the special tokens as Hugging Face truncation does. `tokenize` pads every
row to max_length (training: the loop trims each global batch to a length bucket);
`batches` sorts texts by length and pads each batch of `batch_size` rows to the smallest
length bucket that holds it (encoding: a jitted encoder compiles once per bucket, never per
batch).
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


SIDES = ("query", "document")


@dataclasses.dataclass(frozen=True)
class Batch:
  rows: np.ndarray        # [n] positions of the real rows in the caller's list
  input_ids: np.ndarray   # [batch_size, bucket] int32
  attention_mask: np.ndarray
  token_type_ids: np.ndarray


class TextPath:
  """A `tokenizers.Tokenizer` with each side's prompt and max_length; padding is done here."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, pad_id: int, max_lengths: dict[str, int],
               prompts: dict[str, str]):
    self.tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())  # its truncation is ours to set
    self.tokenizer.no_padding()
    self.tokenizer.no_truncation()
    self.pad_id, self.max_lengths, self.prompts = pad_id, dict(max_lengths), dict(prompts)
    self._truncating = {}
    for side in SIDES:
      self._truncating[side] = tokenizers.Tokenizer.from_str(self.tokenizer.to_str())
      self._truncating[side].enable_truncation(self.max_lengths[side])

  def with_max_lengths(self, **max_lengths) -> "TextPath":
    """The same path with other max lengths for the sides named (training's query and document lengths)."""
    return TextPath(self.tokenizer, self.pad_id, {**self.max_lengths, **max_lengths}, self.prompts)

  def encodings(self, texts, side: str, prompt: str | None = None) -> list:
    """The tokenizer's encodings of prompt + text; `prompt` None: the side's."""
    prompt = self.prompts[side] if prompt is None else prompt
    return self._truncating[side].encode_batch([prompt + t for t in texts])

  def tokenize(self, texts, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [n, max_length of the side], right padded."""
    ids, mask, _ = self._padded(self.encodings(texts, side), len(texts), self.max_lengths[side])
    return ids, mask

  def _padded(self, encodings, rows: int, width: int):
    """(ids, mask, token types) [rows, width], the encodings right padded in order, the rest padding."""
    ids = np.full((rows, width), self.pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    types = np.zeros((rows, width), np.int32)
    for r, e in enumerate(encodings):
      ids[r, :len(e.ids)] = e.ids
      mask[r, :len(e.ids)] = 1
      types[r, :len(e.ids)] = e.type_ids
    return ids, mask, types

  def batches(self, texts, side: str, batch_size: int, prompt: str | None = None):
    """Yields Batch objects, longest texts first; rows map back to the input order."""
    encodings = self.encodings(texts, side, prompt)
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    buckets = default_buckets(self.max_lengths[side])
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      width = next(b for b in buckets if b >= lengths[rows].max())
      ids, mask, types = self._padded([encodings[i] for i in rows], batch_size, width)
      yield Batch(rows, ids, mask, types)
