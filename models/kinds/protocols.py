"""What the generic code (the trainer, the evaluation driver, mining, `Retriever`) uses of a kind,
written down as typing.Protocol classes, and `KindBase`, which holds the defaults, so that a kind
writes only what differs.

- `RetrieverModule`, the device side: encode(tokens, side) → a representation pytree;
  score(q, d) → [Bq, Nd]; regularizers(q, d) → named terms added to the loss.
- `RerankerModule`, the device side of a reranker: score_pairs(tokens) → [B, C] for B queries'
  C candidates, read jointly with their query; it has no index.
- `ReconstructionModule`, the device side of a model trained on reconstruction (an SAE on a frozen
  retriever): activations(tokens) → (x [N, d], weights [N]) of the frozen model; reconstruct(x) →
  (x̂, regularizer terms).
- `HostKind`, the host side of any kind: attach the tokenizer, claim a folder, read it, create a
  new model (from a sample of the training data, `data=`, where it initialises from data: an SAE's
  b_dec), export, and (retrievers) turn per-batch outputs into per-text ones and index them.

Any module may also define after_update(), which the train step runs on the updated parameters
(an SAE's unit-norm decoder); variables that are not nnx.Param are trained model state
(train/step.py).
"""
from typing import Any, ClassVar, Protocol, runtime_checkable

from flax import nnx


@runtime_checkable
class RetrieverModule(Protocol):
  name: ClassVar[str]
  symmetric: ClassVar[bool]  # encode ignores the side: one compilation serves queries and documents

  def encode(self, tokens: dict, side: str, *, packing=None, dropout=None) -> Any: ...

  def score(self, queries, documents): ...

  def regularizers(self, queries, documents) -> dict: ...


@runtime_checkable
class RerankerModule(Protocol):
  name: ClassVar[str]

  def score_pairs(self, tokens: dict, *, packing=None, dropout=None): ...


@runtime_checkable
class ReconstructionModule(Protocol):

  def activations(self, tokens: dict) -> tuple[Any, Any]: ...

  def reconstruct(self, x) -> tuple[Any, dict]: ...


@runtime_checkable
class HostKind(Protocol):
  name: ClassVar[str]
  Settings: ClassVar[type]

  def attach(self, tokenizer, max_positions: int, source): ...

  @classmethod
  def claims(cls, folder) -> bool: ...

  @classmethod
  def create(cls, backbone, tokenizer, settings, data=None): ...

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides): ...

  def parts(self) -> dict: ...

  @classmethod
  def from_parts(cls, parts: dict, settings): ...

  def export(self, folder) -> None: ...


class KindBase(nnx.Module):
  """Defaults: one part (the backbone), no regularizers, no index settings to check, encode's
  outputs scored as they are."""
  symmetric = False

  def parts(self) -> dict:
    """The module's parts by name, as the manifest describes them (models/checkpoint.py)."""
    return {"backbone": self.backbone}

  @classmethod
  def from_parts(cls, parts: dict, settings):
    """The module rebuilt from its parts (fresh parameters) and settings."""
    return cls(parts["backbone"], settings)

  def regularizers(self, queries, documents) -> dict:
    del queries, documents
    return {}

  @staticmethod
  def check_index(index_config, num_docs: int, source: str) -> None:
    """config.index against the corpus size, before anything is encoded."""
    del index_config, num_docs, source

  @staticmethod
  def batched(encoded, what: str):
    """What encode_* return, as score takes it."""
    del what
    return encoded

  @classmethod
  def claims(cls, folder) -> bool:
    del folder
    return False
