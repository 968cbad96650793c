"""A tiny test reranker kind (tests only): score(q, d) = w · h_[CLS] of the backbone reading the
joined pair, token types included. It has every part of the reranker protocol and of a host
kind, so the generic code (loading, the rerank stage, the pairs task) runs on it before the
cross-encoder kind exists."""
import dataclasses
import json

import jax
import numpy as np
from flax import nnx

from retrax.files import as_path
from retrax.models import kinds
from retrax.models.backbones import hf
from retrax.models.kinds.protocols import KindBase
from retrax.models.text import TextPath, pad_id

MARKER = "tiny_reranker.json"
BERT = {"model_type": "bert", "vocab_size": 120, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 64, "type_vocab_size": 2}


@dataclasses.dataclass(frozen=True)
class TinyRerankerSettings:
  max_length: int = 24


class TinyReranker(KindBase):
  name = "tiny_reranker"
  Settings = TinyRerankerSettings

  def __init__(self, backbone, settings: TinyRerankerSettings, seed: int = 7):
    self.backbone, self.settings = backbone, settings
    self.head = nnx.Param(jax.random.normal(jax.random.key(seed), (backbone.config.hidden_size,)))

  def score_pairs(self, tokens, *, packing=None, dropout=None):
    del packing
    b, c, l = tokens["input_ids"].shape
    flat = {k: v.reshape(b * c, l) for k, v in tokens.items()}
    hidden = self.backbone(flat["input_ids"], flat["attention_mask"], flat.get("token_type_ids"), None, dropout)
    return (hidden[:, 0] @ self.head[...]).reshape(b, c)

  def attach(self, tokenizer, max_positions: int, source) -> TextPath:
    del max_positions, source
    length = self.settings.max_length
    return TextPath(tokenizer, pad_id(tokenizer, self.backbone.config), {"query": length, "document": length},
                    {"query": "", "document": ""})

  @classmethod
  def claims(cls, folder) -> bool:
    return (as_path(folder) / MARKER).is_file()

  @classmethod
  def create(cls, backbone, tokenizer, settings, data=None):
    del data
    return cls(backbone, settings), tokenizer

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides):
    folder = as_path(folder)
    module = cls(backbone, TinyRerankerSettings(**{**json.loads((folder / MARKER).read_text()), **overrides}))
    module.head[...] = np.load(folder / "head.npy")
    return module, tokenizer

  def export(self, folder) -> None:
    hf.export_backbone(self.backbone, self.backbone.config, folder)
    np.save(as_path(folder) / "head.npy", np.asarray(self.head[...]))
    (as_path(folder) / MARKER).write_text(json.dumps(dataclasses.asdict(self.settings)))


def register(monkeypatch) -> None:
  """The test kind, asked first by kinds.for_folder, for the test's duration."""
  monkeypatch.setattr(kinds, "KINDS", {TinyReranker.name: TinyReranker, **kinds.KINDS})
