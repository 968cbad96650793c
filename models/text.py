"""The one text path: texts to right-padded int32 token arrays, the same for training and encoding.

A side ("query" or "document") prefixes its prompt; the tokenizer truncates to the side's
max_length, keeping the special tokens as Hugging Face truncation does. `tokenize` pads every
row to max_length (training: the loop trims each global batch to a length bucket);
`batches` sorts texts by length and pads each batch of `batch_size` rows to the smallest
length bucket that holds it (encoding: a jitted encoder compiles once per bucket, never per
batch).

Pairs (a cross-encoder's (query, document)) go through the same path: `pair_rows` joins them
with the tokenizer's pair template ([CLS] q [SEP] d [SEP], token types 0 then 1), truncated as
transformers truncates pairs (`longest_first`: a token at a time from the longer side;
`only_second`: the document alone), and `pair_batches` buckets them as `batches` does.
`padding_side="left"` pads on the left (causal models read the last position).
"""
import collections.abc
import dataclasses

import numpy as np
import tokenizers

from ..errors import InputError


def default_buckets(max_length: int) -> tuple[int, ...]:
  """Powers of two and their midpoints from 16 up to max_length, which is always the last."""
  sizes = {16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192}
  return tuple(sorted({s for s in sizes if s < max_length} | {max_length}))


def check_texts(texts) -> list[str]:
  """`texts` (a list, tuple or other sequence, or a numpy array) as a list of strings that UTF-8
  can encode; anything else is an InputError naming the type, or the position and the cause."""
  if isinstance(texts, (str, bytes)) or not isinstance(texts, (collections.abc.Sequence, np.ndarray)):
    raise InputError("texts", f"expected a list (or another sequence) of strings, got {type(texts).__name__}")
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise InputError(f"texts[{i}]", f"expected a string, got {type(text).__name__}")
    try:
      text.encode("utf-8")
    except UnicodeEncodeError as error:
      raise InputError(f"texts[{i}]", f"character {error.start} is {text[error.start]!r}, a lone surrogate "
                                      "that UTF-8 cannot encode (text decoded with errors='surrogateescape'?)") from None
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
PAIR_TRUNCATIONS = ("longest_first", "only_second")


def pad_id(tokenizer: tokenizers.Tokenizer, backbone_config) -> int:
  """The tokenizer's padding id, else the backbone config's pad_token_id, else 0."""
  padding = tokenizer.padding
  return padding["pad_id"] if padding else getattr(backbone_config, "pad_token_id", 0) or 0


@dataclasses.dataclass(frozen=True)
class Batch:
  rows: np.ndarray        # [n] positions of the real rows in the caller's list
  input_ids: np.ndarray   # [batch_size, bucket] int32
  attention_mask: np.ndarray
  token_type_ids: np.ndarray


class TextPath:
  """A `tokenizers.Tokenizer` with each side's prompt and max_length; padding is done here.

  Multi-vector kinds add (PyLate's conventions): `markers`, a token id per side inserted right
  after the first token ([CLS] [Q] …), the text then truncated one token shorter so the row
  still fits max_length; and `expand` sides, padded to exactly max_length with `pad_id`
  (ColBERT's [MASK] query expansion), attended to only when `attend_expansion`.
  """

  def __init__(self, tokenizer: tokenizers.Tokenizer, pad_id: int, max_lengths: dict[str, int],
               prompts: dict[str, str], *, markers: dict[str, int] | None = None, expand: tuple[str, ...] = (),
               attend_expansion: bool = False, padding_side: str = "right"):
    if padding_side not in ("right", "left"):
      raise InputError("padding_side", f"expected 'right' or 'left', got {padding_side!r}")
    self.padding_side = padding_side
    self.tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())  # its truncation is ours to set
    self.tokenizer.no_padding()
    self.tokenizer.no_truncation()
    self.pad_id, self.max_lengths, self.prompts = pad_id, dict(max_lengths), dict(prompts)
    self.markers, self.expand, self.attend_expansion = dict(markers or {}), tuple(expand), attend_expansion
    self._truncating = {}
    for side in SIDES:
      self._truncating[side] = tokenizers.Tokenizer.from_str(self.tokenizer.to_str())
      self._truncating[side].enable_truncation(self.max_lengths[side] - (side in self.markers))

  def with_max_lengths(self, **max_lengths) -> "TextPath":
    """The same path with other max lengths for the sides named (training's query and document lengths)."""
    return TextPath(self.tokenizer, self.pad_id, {**self.max_lengths, **max_lengths}, self.prompts,
                    markers=self.markers, expand=self.expand, attend_expansion=self.attend_expansion,
                    padding_side=self.padding_side)

  def token_rows(self, texts, side: str, prompt: str | None = None) -> list[tuple[list[int], list[int]]]:
    """(ids, token type ids) of prompt + text, truncated, with the side's marker; `prompt` None: the side's."""
    prompt = self.prompts[side] if prompt is None else prompt
    encodings = self._truncating[side].encode_batch([prompt + t for t in texts])
    if side not in self.markers:
      return [(e.ids, e.type_ids) for e in encodings]
    return [(e.ids[:1] + [self.markers[side]] + e.ids[1:], e.type_ids[:1] + [0] + e.type_ids[1:]) for e in encodings]

  def tokenize(self, texts, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [n, max_length of the side], right padded."""
    ids, mask, _ = self._padded(self.token_rows(texts, side), len(texts), self.max_lengths[side], side)
    return ids, mask

  def _padded(self, rows, count: int, width: int, side: str | None):
    """(ids, mask, token types) [count, width], the rows padded on `padding_side` in order, the rest padding."""
    ids = np.full((count, width), self.pad_id, np.int32)
    mask = np.full((count, width), int(side in self.expand and self.attend_expansion), np.int32)
    types = np.zeros((count, width), np.int32)
    for r, (row_ids, row_types) in enumerate(rows):
      span = slice(width - len(row_ids), width) if self.padding_side == "left" else slice(0, len(row_ids))
      ids[r, span], mask[r, span], types[r, span] = row_ids, 1, row_types
    return ids, mask, types

  def pair_rows(self, queries, documents, max_length: int, truncation: str = "longest_first"):
    """(ids, token type ids) of each (query prompt + query, document prompt + document) pair, joined by
    the tokenizer's pair template and truncated to max_length (`truncation`: PAIR_TRUNCATIONS)."""
    if truncation not in PAIR_TRUNCATIONS:
      raise InputError("truncation", f"expected one of {list(PAIR_TRUNCATIONS)}, got {truncation!r}")
    if len(queries) != len(documents):
      raise InputError("pairs", f"{len(queries)} queries but {len(documents)} documents")
    key = (max_length, truncation)
    if key not in self._truncating:
      self._truncating[key] = tokenizers.Tokenizer.from_str(self.tokenizer.to_str())
      self._truncating[key].enable_truncation(max_length, strategy=truncation)
    encodings = self._truncating[key].encode_batch(
        [(self.prompts["query"] + q, self.prompts["document"] + d) for q, d in zip(queries, documents)])
    return [(e.ids, e.type_ids) for e in encodings]

  def tokenize_pairs(self, queries, documents, max_length: int, truncation: str = "longest_first"):
    """(ids, mask, token type ids) [n, max_length] of the pairs (pair_rows), padded on `padding_side`."""
    return self._padded(self.pair_rows(queries, documents, max_length, truncation), len(queries), max_length, None)

  def pair_batches(self, queries, documents, max_length: int, batch_size: int, truncation: str = "longest_first"):
    """Yields Batch objects of (query, document) pairs, longest first; rows map back to the input order."""
    yield from self._bucketed(self.pair_rows(queries, documents, max_length, truncation), batch_size,
                              default_buckets(max_length), None)

  def batches(self, texts, side: str, batch_size: int, prompt: str | None = None):
    """Yields Batch objects, longest texts first; rows map back to the input order."""
    buckets = (self.max_lengths[side],) if side in self.expand else default_buckets(self.max_lengths[side])
    yield from self._bucketed(self.token_rows(texts, side, prompt), batch_size, buckets, side)

  def _bucketed(self, rows, batch_size: int, buckets, side: str | None):
    lengths = np.array([len(ids) for ids, _ in rows])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
      chosen = order[start:start + batch_size]
      width = next(b for b in buckets if b >= lengths[chosen].max())
      ids, mask, types = self._padded([rows[i] for i in chosen], batch_size, width, side)
      yield Batch(chosen, ids, mask, types)
