"""Multi-vector (ColBERT) retriever, late interaction (Khattab & Zaharia, 2020), in PyLate's conventions:

  E = normalize(projection(backbone(tokens))) ∈ R^{L×d},   score(q, d) = Σ_i m^q_i · max_j ⟨q_i, d_j⟩ m^d_j.

- `[Q] ` / `[D] ` marker tokens (ids read from the tokenizer) right after [CLS]; each side's text
  is truncated one token shorter to make room.
- Queries are padded to query_length with [MASK] (PyLate's pad id), not attended to unless
  attend_to_expansion_tokens; every query position is scored (m^q = 1). Without
  do_query_expansion, queries are not expanded and m^q is the attention mask.
- Documents (document_length, default 180) score their attended tokens outside the skiplist
  (punctuation: the ids of `skiplist_words`, a word missing from the vocabulary mapping to
  [UNK] as in PyLate): m^d = attention ∧ ¬skiplist.
- Masking is multiplicative (PyLate's `colbert_scores`): a masked document token scores 0, not −∞.
- zero_expansion: checkpoints trained with unpadded FlashAttention (ModernBERT, PyLate issues
  #109 and #125) saw zero hidden states at the unattended expansion positions; set, the
  backbone's states there are zeroed before the projection. Unset, they are computed as eager
  attention computes them (queries then never run unpadded).
"""
import dataclasses
import string

import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx

from ... import checks
from ...errors import InputError
from ...index import scann_index
from ...index.multivector import MaxSimIndex, maxsim, pad
from ...index.token_index import K_TOKEN, TokenIndex
from .. import multi_vector_format, pylate_format, stanford_format
from ..backbones import hf
from ..heads.pooling import l2_normalize
from ..heads.projection import Layer, Projection
from ..text import TextPath, check_max_length
from .protocols import KindBase

# The folder formats a ColBERT loads from (each: claims(folder), read(folder, tokenizer, backbone_config)),
# the most specific claim first: a MultiVectorEncoder folder names its model_type.
FORMATS = (multi_vector_format, pylate_format, stanford_format)


def _layers(value) -> tuple[Layer, ...]:
  """A projection given as Layers or as their dicts (a manifest, a config)."""
  return tuple(v if isinstance(v, Layer) else Layer(**dict(v)) for v in value)


@dataclasses.dataclass(frozen=True)
class ColBERTConfig:
  projection: tuple[Layer, ...] = (Layer(128),)
  query_prefix: str = "[Q] "
  document_prefix: str = "[D] "
  query_length: int = 32
  document_length: int = 180
  do_query_expansion: bool = True
  attend_to_expansion_tokens: bool = False
  skiplist_words: tuple[str, ...] = tuple(string.punctuation)
  zero_expansion: bool = False
  query_prompt: str = ""
  document_prompt: str = ""

  def __post_init__(self):
    if not self.projection:
      raise InputError("projection", "expected at least one layer")
    try:
      object.__setattr__(self, "projection", _layers(self.projection))
    except (TypeError, ValueError) as e:
      raise InputError("projection", str(e)) from None
    object.__setattr__(self, "skiplist_words", tuple(self.skiplist_words))
    for name in ("query_length", "document_length"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise InputError(name, f"expected an integer ≥ 2 (a marker and a token), got {value!r}")
    for name in ("do_query_expansion", "attend_to_expansion_tokens", "zero_expansion"):
      if not isinstance(getattr(self, name), bool):
        raise InputError(name, f"expected true or false, got {getattr(self, name)!r}")
    for name in ("query_prefix", "document_prefix", "query_prompt", "document_prompt"):
      if not isinstance(getattr(self, name), str):
        raise InputError(name, f"expected a string, got {getattr(self, name)!r}")

  @property
  def dimension(self) -> int:
    return self.projection[-1].features


class ColBERT(KindBase):
  """The retriever protocol: encode(tokens, side) → {"vectors": [B, L, d], "mask": [B, L]};
  score(q, d) → [Bq, Nd] MaxSim; no regularizers."""
  name = "colbert"
  Settings = ColBERTConfig

  def __init__(self, backbone: nnx.Module, settings: ColBERTConfig, *, rngs: nnx.Rngs | None = None):
    self.backbone, self.settings = backbone, settings
    self.projection = Projection(backbone.config.hidden_size, settings.projection, rngs=rngs or nnx.Rngs(0))
    self.skiplist_ids: tuple[int, ...] = ()

  def encode(self, tokens: dict, side: str, *, packing=None, dropout=None):
    s, mask = self.settings, tokens["attention_mask"]
    expanded = side == "query" and s.do_query_expansion
    if expanded and not s.zero_expansion:
      packing = None  # the expansion positions are computed, not skipped
    hidden = self.backbone(tokens["input_ids"], mask, tokens.get("token_type_ids"), packing, dropout)
    if expanded and s.zero_expansion:
      hidden = hidden * mask[..., None].astype(hidden.dtype)
    vectors = l2_normalize(self.projection(hidden).astype(jnp.float32))
    if expanded:
      scored = jnp.ones_like(mask, dtype=bool)
    elif side == "query":
      scored = mask.astype(bool)
    else:
      skipped = jnp.isin(tokens["input_ids"], jnp.asarray(self.skiplist_ids, jnp.int32))
      scored = mask.astype(bool) & ~skipped
    return {"vectors": vectors, "mask": scored}

  @staticmethod
  def score(queries, documents):
    """MaxSim of queries {vectors [m, Lq, d], mask [m, Lq]} against documents {[n, Ld, d], [n, Ld]} → [m, n]."""
    return maxsim(queries, documents)

  # The host side: settings, text path, outputs, files and index.

  def attach(self, tokenizer, max_positions: int, source) -> TextPath:
    """The text path for `tokenizer`: marker ids and skiplist ids read from it, the mask token
    ([MASK] or <mask>) as the pad, as PyLate sets pad_token_id := mask_token_id."""
    s = self.settings
    for name in ("query_length", "document_length"):
      check_max_length(getattr(s, name), max_positions, f"{source} ({name})")
    markers = {}
    for side, prefix in (("query", s.query_prefix), ("document", s.document_prefix)):
      if prefix:
        markers[side] = tokenizer.token_to_id(prefix)
        if markers[side] is None:
          raise InputError(source, f"the tokenizer has no {prefix!r} token (the {side} prefix)")
    pad = next((i for i in map(tokenizer.token_to_id, ("[MASK]", "<mask>")) if i is not None), None)
    if pad is None:
      raise InputError(source, "the tokenizer has no mask token to pad and expand queries with")
    unk = tokenizer.token_to_id(_special(tokenizer, "unk_token", "[UNK]"))
    ids = [tokenizer.token_to_id(w) for w in s.skiplist_words]
    self.skiplist_ids = tuple(sorted({unk if i is None else i for i in ids} - {None}))
    return TextPath(tokenizer, pad, {"query": s.query_length, "document": s.document_length},
                    {"query": s.query_prompt, "document": s.document_prompt}, markers=markers,
                    expand=("query",) if s.do_query_expansion else (),
                    attend_expansion=s.do_query_expansion and s.attend_to_expansion_tokens)

  @property
  def dimension(self) -> int:
    return self.settings.dimension

  @staticmethod
  def unbatch(representations, rows: int) -> list[np.ndarray]:
    """One batch's vectors, each text's scored tokens alone ([L_i, d] float32), as PyLate encodes."""
    vectors, mask = np.asarray(representations["vectors"]), np.asarray(representations["mask"])
    return [vectors[i][mask[i]] for i in range(rows)]

  @staticmethod
  def gather(items: list) -> list[np.ndarray]:
    return items

  @staticmethod
  def batched(encoded, what: str) -> dict:
    """What encode_* return (a list of [L_i, d] arrays, or one text's [L, d]) as score takes it:
    {vectors [n, max L_i, d], mask [n, max L_i]}; a dict already in that form is kept."""
    if isinstance(encoded, dict):
      return encoded
    items = [encoded] if isinstance(encoded, np.ndarray) and encoded.ndim == 2 else list(encoded)
    try:
      return pad(items, len(items), what)
    except ValueError as e:
      raise InputError(what, str(e)) from None

  @classmethod
  def claims(cls, folder) -> bool:
    return any(f.claims(folder) for f in FORMATS)

  @classmethod
  def create(cls, backbone, tokenizer, settings: ColBERTConfig, data=None):
    """(module, tokenizer) of a new ColBERT on `backbone`: a fresh projection, and the prefixes the
    tokenizer lacks added to it (PyLate's tokenizer.add_tokens) and to the embedding table, their
    rows the mean of the table's. Nothing is initialised from `data`."""
    del data
    missing = [p for p in (settings.query_prefix, settings.document_prefix) if p and tokenizer.token_to_id(p) is None]
    if missing:
      tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())
      tokenizer.add_tokens(missing)
      backbone = hf.resize_vocab(backbone, tokenizer.get_vocab_size(with_added_tokens=True))
    return cls(backbone, settings), tokenizer

  @classmethod
  def from_folder(cls, backbone, tokenizer, folder, **overrides):
    """(module, tokenizer) of a PyLate, sentence-transformers MultiVectorEncoder or Stanford ColBERT
    folder, or a new ColBERT (a fresh projection, [Q] and [D] added to the tokenizer and the
    embedding table) on the backbone of any other folder."""
    fmt = next((f for f in FORMATS if f.claims(folder)), None)
    found, layers, weights = fmt.read(folder, tokenizer, backbone.config) if fmt else ({}, (), [])
    if layers and "projection" in overrides:
      raise InputError(folder, "holds a ColBERT projection; a projection override would discard it")
    settings = ColBERTConfig(**{**found, **overrides, **({"projection": layers} if layers else {})})
    if not layers:
      return cls.create(backbone, tokenizer, settings)
    module = cls(backbone, settings)
    for i, (layer, tensors) in enumerate(zip(module.projection.layers, weights)):
      hf.assign(layer, tensors, layer.weight_map(), f"{folder} (Dense layer {i + 1})")
    return module, tokenizer

  def export(self, folder) -> None:
    """A PyLate folder (pylate.models.ColBERT loads it); gated layers have no PyLate form."""
    gated = [i for i, layer in enumerate(self.settings.projection) if layer.gated]
    if gated:
      raise InputError(folder, f"projection layers {gated} are gated (GLU), which PyLate's Dense chain cannot "
                               "express; save a retrax checkpoint instead (retrax.models.checkpoint.save)")
    hf.export_backbone(self.backbone, self.backbone.config, folder)
    weights = [hf.tensors_of(layer, layer.weight_map()) for layer in self.projection.layers]
    pylate_format.write(folder, self.settings.projection, weights, dataclasses.asdict(self.settings),
                        self.backbone.config.hidden_size)

  @staticmethod
  def check_index(index_config, num_docs: int, source: str) -> None:
    """config.index's ScaNN keys and k_token, before anything is encoded (the token index is sized
    by the token count, known only then)."""
    del num_docs
    scann_index.check_settings(index_config, source)
    if index_config.get("k_token") is not None:
      checks.integer(index_config.k_token, f"{source}.k_token", low=1)

  @staticmethod
  def index(documents: list, doc_ids: list[str], index_config=None, fingerprint: str = ""):
    """Exhaustive MaxSim (index_config None or kind "exact"), or ScaNN over the token vectors with
    exact MaxSim re-scoring (index/token_index.py); `.search(queries, k)` → (indices, scores)."""
    if index_config is None or index_config.kind == "exact":
      return MaxSimIndex(documents)
    return TokenIndex.build(documents, doc_ids, fingerprint, {k: index_config[k] for k in scann_index.KEYS},
                            k_token=index_config.get("k_token") or K_TOKEN, source="config.index")


def _special(tokenizer, name: str, default: str) -> str:
  """A special token's text from the tokenizer's model (WordPiece, BPE, WordLevel), else `default`."""
  return str(getattr(tokenizer.model, name, None) or default)
