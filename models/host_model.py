"""What every host-side model holds: a kind's module with its tokenizer and text path, its
parameters apart from its graph, and its checksum and export. `Retriever` (retriever.py) adds
encoding, scoring and indexing; `Reranker` (reranker.py) scoring of text pairs."""
import copy
import hashlib

import jax
import numpy as np
import tokenizers
from flax import nnx

from ..errors import InputError
from ..files import as_path, atomic_directory

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")


def read_tokenizer(path) -> tokenizers.Tokenizer:
  """A `tokenizers` tokenizer.json; an unreadable one is an InputError naming the file."""
  try:
    return tokenizers.Tokenizer.from_str(as_path(path).read_text())
  except Exception as e:  # tokenizers raises a bare Exception for every parse failure
    raise InputError(path, f"not a readable tokenizer.json ({e})") from None


def tokenizer_files(folder) -> dict[str, bytes]:
  folder = as_path(folder)
  return {n: (folder / n).read_bytes() for n in TOKENIZER_FILES if (folder / n).is_file()}


def max_positions(backbone_config) -> int:
  """The longest input the backbone's position embeddings allow (RoBERTa's start after padding_idx)."""
  offset = 2 if getattr(backbone_config, "is_roberta", False) else 0
  return backbone_config.max_position_embeddings - offset


def check_vocabulary(tokenizer: tokenizers.Tokenizer, rows: int, source) -> None:
  """An InputError when the tokenizer can produce ids that the embedding table has no row for."""
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if size > rows:
    raise InputError(source, f"the tokenizer has {size} token ids, but the model's embedding table has {rows} "
                             "rows: a tokenizer from another model, or added tokens without resized embeddings?")


class HostModel:

  def __init__(self, module: nnx.Module, tokenizer: tokenizers.Tokenizer, *,
               tokenizer_files: dict | None = None, source="model"):
    self.source = str(source)
    self.kind = type(module)
    self.backbone_config = module.backbone.config
    check_vocabulary(tokenizer, self.backbone_config.vocab_size, self.source)
    self.text = module.attach(tokenizer, self.max_positions, self.source)
    self.settings = module.settings
    self.tokenizer_files = {**(tokenizer_files or {}), "tokenizer.json": tokenizer.to_str().encode()}
    self.graphdef, self.params = nnx.split(module)

  def with_params(self, params) -> "HostModel":
    """The same model with other parameters (a pure dict, as training holds them)."""
    out = copy.copy(self)
    out.params = nnx.State(params) if isinstance(params, dict) else params
    return out

  @property
  def module(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params)

  @property
  def max_positions(self) -> int:
    return max_positions(self.backbone_config)

  def fingerprint(self) -> str:
    """sha256 over the kind, its settings and every parameter: equal iff the outputs are."""
    h = hashlib.sha256(f"{self.kind.name} {self.settings!r}".encode())
    for leaf in jax.tree.leaves(self.params):
      h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()[:16]

  def save_pretrained(self, folder) -> None:
    """The kind's ecosystem folder (dense: sentence-transformers), with the tokenizer files."""
    with atomic_directory(folder) as partial:
      self.module.export(partial)
      for name, data in self.tokenizer_files.items():
        (partial / name).write_bytes(data)
