"""Tiny test kinds (tests only), with every part of the protocols that the generic code uses, so
that loading, the rerank stage and the trainer's tasks run on them before the real kinds exist:

- `TinyReranker`: score(q, d) = w · h_[CLS] of a backbone reading the joined pair, token types
  included (the reranker protocol; trains on pairs);
- `TinyAutoencoder`: a ReLU autoencoder with an L1 term on the token states of a dense
  retriever's frozen backbone (the retriever is a part of the model, with its own manifest
  entry), its latents counted (model state), its decoder rows kept at unit norm (after_update),
  b_dec initialised as the mean token state of a sample of the training texts (create(data=…));
  it encodes a text as its mean latent vector, so it is a retriever too (trains on
  reconstruction).

A folder holds the backbone's files and `<kind name>.json` (the settings) beside them.
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from retrax.files import as_path
from retrax.models import kinds
from retrax.models.backbones import hf
from retrax.models.kinds.dense import Dense
from retrax.models.kinds.protocols import KindBase
from retrax.models.sentence_config import SentenceConfig
from retrax.models.text import TextPath, pad_id

BERT = {"model_type": "bert", "vocab_size": 120, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 64, "type_vocab_size": 2}
SAMPLE = 64  # texts that initialise the autoencoder's b_dec


class TinyKind(KindBase):
  """What both test kinds share: a text path of settings.max_length, a marker file with the settings."""

  @classmethod
  def marker(cls, folder):
    return as_path(folder) / f"{cls.name}.json"

  def attach(self, tokenizer, max_positions: int, source) -> TextPath:
    del max_positions, source
    length = self.settings.max_length
    return TextPath(tokenizer, pad_id(tokenizer, self.backbone.config), {"query": length, "document": length},
                    {"query": "", "document": ""})

  @classmethod
  def claims(cls, folder) -> bool:
    return cls.marker(folder).is_file()

  @classmethod
  def settings_in(cls, folder, overrides):
    return cls.Settings(**{**json.loads(cls.marker(folder).read_text()), **overrides})

  def export(self, folder) -> None:
    hf.export_backbone(self.backbone, self.backbone.config, folder)
    self.marker(folder).write_text(json.dumps(dataclasses.asdict(self.settings)))


@dataclasses.dataclass(frozen=True)
class TinyRerankerSettings:
  max_length: int = 24


class TinyReranker(TinyKind):
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

  @classmethod
  def create(cls, backbone, tokenizer, settings, data=None):
    del data
    return cls(backbone, settings), tokenizer

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides):
    module = cls(backbone, cls.settings_in(folder, overrides))
    module.head[...] = np.load(as_path(folder) / "head.npy")
    return module, tokenizer

  def export(self, folder) -> None:
    super().export(folder)
    np.save(as_path(folder) / "head.npy", np.asarray(self.head[...]))


class Fired(nnx.Variable):
  """How many token rows fired each latent since training began."""


@dataclasses.dataclass(frozen=True)
class TinyAutoencoderSettings:
  latents: int = 24
  max_length: int = 48


class TinyAutoencoder(TinyKind):
  name = "tiny_autoencoder"
  symmetric = True
  Settings = TinyAutoencoderSettings

  def __init__(self, retriever: Dense, settings: TinyAutoencoderSettings, seed: int = 5):
    self.retriever, self.settings = retriever, settings
    d, n = retriever.backbone.config.hidden_size, settings.latents
    keys = jax.random.split(jax.random.key(seed), 2)
    decoder = jax.random.normal(keys[1], (n, d))
    self.encoder = nnx.Param(jax.random.normal(keys[0], (d, n)) / np.sqrt(d))
    self.decoder = nnx.Param(decoder / jnp.linalg.norm(decoder, axis=1, keepdims=True))
    self.b_dec = nnx.Param(jnp.zeros((d,)))
    self.fired = Fired(jnp.zeros((n,), jnp.int32))

  @property
  def backbone(self):
    return self.retriever.backbone

  def parts(self) -> dict:
    return {"retriever": self.retriever}

  @classmethod
  def from_parts(cls, parts: dict, settings):
    return cls(parts["retriever"], settings)

  def activations(self, tokens):
    hidden = self.backbone(tokens["input_ids"], tokens["attention_mask"], None, None, None)
    return hidden.reshape(-1, hidden.shape[-1]), tokens["attention_mask"].reshape(-1)

  def latents(self, x):
    return jax.nn.relu((x - self.b_dec[...]) @ self.encoder[...])

  def reconstruct(self, x):
    z = self.latents(x)
    self.fired[...] = self.fired[...] + (z > 0).sum(0).astype(jnp.int32)
    return z @ self.decoder[...] + self.b_dec[...], {"l1": jnp.abs(z).sum(-1).mean()}

  def after_update(self):
    self.decoder[...] = self.decoder[...] / jnp.linalg.norm(self.decoder[...], axis=1, keepdims=True)

  def encode(self, tokens: dict, side: str, *, packing=None, dropout=None):
    del side, packing, dropout
    x, _ = self.activations(tokens)
    z = self.latents(x).reshape(*tokens["input_ids"].shape, -1)
    mask = tokens["attention_mask"][..., None]
    return (z * mask).sum(1) / mask.sum(1)

  @staticmethod
  def score(queries, documents):
    return queries @ documents.T

  @staticmethod
  def unbatch(representations, rows: int) -> np.ndarray:
    return np.asarray(representations)[:rows]

  @staticmethod
  def gather(items: list) -> np.ndarray:
    return np.stack(items).astype(np.float32)

  @classmethod
  def create(cls, backbone, tokenizer, settings, data=None):
    """A new autoencoder; with `data` (texts), b_dec is the mean token state of its first SAMPLE."""
    module = cls(Dense(backbone, SentenceConfig(pooling="mean", normalize=False)), settings)
    if data:
      ids, mask = module.attach(tokenizer, 0, "data").tokenize(list(data)[:SAMPLE], "document")
      x, weights = module.activations({"input_ids": ids, "attention_mask": mask})
      module.b_dec[...] = (x * weights[:, None]).sum(0) / weights.sum()
    return module, tokenizer

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides):
    return cls.create(backbone, tokenizer, cls.settings_in(folder, overrides))


def register(monkeypatch, kind) -> None:
  """`kind`, asked first by kinds.for_folder, for the test's duration."""
  monkeypatch.setattr(kinds, "KINDS", {kind.name: kind, **kinds.KINDS})
