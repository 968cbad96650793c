"""Single-vector (dense) retriever, Sentence-BERT (Reimers & Gurevych, 2019):

  e = pool(backbone(tokens)), L2-normalised if set;   score(q, d) = ⟨q, d⟩.

Reads and writes sentence-transformers folders (Transformer, Pooling, Normalize); indexed by
exact search or ScaNN.
"""
import dataclasses

import numpy as np
from flax import nnx

from ...errors import InputError
from ...index import scann_index
from ...index.exact import ExactIndex
from .. import sentence_config
from ..backbones import hf
from ..heads.pooling import l2_normalize, pool
from ..text import TextPath, check_max_length, pad_id
from .protocols import KindBase


class Dense(KindBase):
  """The retriever protocol: encode(tokens, side) → [B, d]; score(q, d) → [Bq, Nd]; no regularizers."""
  name = "dense"
  symmetric = True  # encode ignores the side
  Settings = sentence_config.SentenceConfig

  def __init__(self, backbone: nnx.Module, settings: sentence_config.SentenceConfig):
    self.backbone, self.settings = backbone, settings

  def encode(self, tokens: dict, side: str, *, packing=None, dropout=None):
    """tokens: input_ids, attention_mask [B, L] (and optional token_type_ids) → [B, d].

    `packing` (an int capacity, static, or a pack index [shards, c]) runs the backbone unpadded
    (`backbones/unpadding.py`); `dropout` (a `dropout.Dropout`, training only) drops at the
    backbone's sites. Both sides encode alike."""
    del side
    hidden = self.backbone(tokens["input_ids"], tokens["attention_mask"], tokens.get("token_type_ids"),
                           packing, dropout)
    emb = pool(hidden, tokens["attention_mask"], self.settings.pooling)
    return l2_normalize(emb) if self.settings.normalize else emb

  @staticmethod
  def score(queries, documents):
    """[m, d] × [n, d] → [m, n] inner products, of numpy or JAX arrays."""
    return queries @ documents.T

  # The host side: settings, text path, outputs, files and index.

  def attach(self, tokenizer, max_positions: int, source) -> TextPath:
    """The text path for `tokenizer`; settings.max_length resolved against the backbone's positions."""
    self.settings = s = dataclasses.replace(
        self.settings, max_length=check_max_length(self.settings.max_length, max_positions, source))
    return TextPath(tokenizer, pad_id(tokenizer, self.backbone.config),
                    {"query": s.max_length, "document": s.max_length},
                    {"query": s.query_prompt, "document": s.document_prompt})

  @property
  def dimension(self) -> int:
    return self.backbone.config.hidden_size

  @staticmethod
  def unbatch(representations, rows: int) -> np.ndarray:
    """One batch's [B, d] to its first `rows` rows."""
    return np.asarray(representations)[:rows]

  def gather(self, items: list) -> np.ndarray:
    """Every text's [d] row, in order, as [n, d] float32."""
    return np.stack(items).astype(np.float32) if items else np.zeros((0, self.dimension), np.float32)

  @classmethod
  def claims(cls, folder) -> bool:
    """A model folder with no task head (the registry asks the other kinds first)."""
    return hf.task_head(folder) is None

  @classmethod
  def create(cls, backbone, tokenizer, settings, data=None):
    """(module, tokenizer) of a new retriever on `backbone`; nothing is initialised from `data`."""
    del data
    return cls(backbone, settings), tokenizer

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides):
    """(module, tokenizer) of a sentence-transformers (or plain transformers) folder; overrides are Settings fields."""
    return cls(backbone, dataclasses.replace(sentence_config.read(folder), **overrides)), tokenizer

  def export(self, folder) -> None:
    """A folder that transformers and sentence-transformers load as they are (tokenizer files aside)."""
    hf.export_backbone(self.backbone, self.backbone.config, folder)
    sentence_config.write(folder, self.settings, self.dimension)

  @staticmethod
  def check_index(index_config, num_docs: int, source: str) -> None:
    """config.index (exact, or ScaNN's keys) against the corpus size, before anything is encoded
    (scann_index.choose_config); k_token, the token index's, is an error."""
    scann_index.check_settings(index_config, source)
    if index_config.get("k_token") is not None:
      raise InputError(f"{source}.k_token", "a setting of the colbert kind's token index; a dense index has none")
    if index_config.kind == "scann":
      scann_index.choose_config(num_docs, {k: index_config[k] for k in scann_index.KEYS}, source=source)

  @staticmethod
  def index(documents: np.ndarray, doc_ids: list[str], index_config=None, fingerprint: str = ""):
    """Exact search (index_config None or kind "exact") or ScaNN over [n, d] document vectors;
    `.search(queries, k)` → (indices, scores) [m, k]."""
    if index_config is None or index_config.kind == "exact":
      return ExactIndex(documents)
    return scann_index.ScannIndex.build(documents, doc_ids, fingerprint,
                                        {k: index_config[k] for k in scann_index.KEYS})
