"""Single-vector (dense) retriever: backbone + pooling (+ L2 norm); score(q, d) = ⟨q, d⟩."""
import copy
import dataclasses
import hashlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from tqdm.auto import tqdm

from .. import checks
from ..errors import InputError
from ..files import atomic_directory
from . import sentence_config
from .backbones import hf, unpadding
from .text import TextPath, check_max_length, check_texts
from .heads.pooling import l2_normalize, pool

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")


def read_tokenizer(path) -> tokenizers.Tokenizer:
  """A `tokenizers` tokenizer.json; an unreadable one is an InputError naming the file."""
  try:
    return tokenizers.Tokenizer.from_file(str(path))
  except Exception as e:  # tokenizers raises a bare Exception for every parse failure
    raise InputError(path, f"not a readable tokenizer.json ({e})") from None


def _pad_id(tokenizer: tokenizers.Tokenizer, backbone_config) -> int:
  padding = tokenizer.padding
  return padding["pad_id"] if padding else getattr(backbone_config, "pad_token_id", 0) or 0


def embed(backbone: nnx.Module, settings: sentence_config.SentenceConfig, input_ids, attention_mask,
          token_type_ids=None, token_capacity=None, dropout=None):
  """Token ids [B, L] to sentence embeddings [B, d]: pooled last hidden states, L2-normalised if set.

  `token_capacity` (static) runs the backbone unpadded (`backbones/unpadding.py`); `dropout` (a
  `dropout.Dropout`, training only) drops at the backbone's sites."""
  hidden = backbone(input_ids, attention_mask, token_type_ids, token_capacity, dropout)
  emb = pool(hidden, attention_mask, settings.pooling)
  return l2_normalize(emb) if settings.normalize else emb


class DenseRetriever:
  """`encode_queries` / `encode_documents` / `encode` return float32 numpy [n, d] for a list of
  texts, and [d] for one string, as sentence-transformers does.

  Texts are sorted by length and padded to fixed buckets, so the jitted encoder compiles
  once per bucket; results come back in the caller's order. A batch at most 3/4 real tokens
  (the last one, or lengths spread within a bucket) runs unpadded, at a capacity of 1/4, 1/2
  or 3/4 of the bucket: one more compilation for each capacity met. `unpad = False` turns that off.

  Bad input is an InputError before any encoding: an item that is not a string, a batch size
  below 1, a max_length outside 1 … the model's positions. Non-finite embeddings (NaN or inf
  parameters) are an InputError naming the model and how many texts gave them.
  """
  unpad = True

  def __init__(self, backbone: nnx.Module, backbone_config, tokenizer: tokenizers.Tokenizer,
               settings: sentence_config.SentenceConfig, *, tokenizer_files: dict | None = None, source="model"):
    self.backbone_config = backbone_config
    self.source = str(source)
    max_length = check_max_length(settings.max_length, self.max_positions, self.source)
    self.settings = dataclasses.replace(settings, max_length=max_length)
    self.text = TextPath(tokenizer, _pad_id(tokenizer, backbone_config),
                         {"query": self.settings.max_length, "document": self.settings.max_length},
                         {"query": self.settings.query_prompt, "document": self.settings.document_prompt})
    self.tokenizer_files = tokenizer_files or {}
    self.graphdef, self.params = nnx.split(backbone)
    self._embed = jax.jit(self.embed, static_argnames="token_capacity")

  @classmethod
  def from_pretrained(cls, folder, *, dtype=jnp.float32, **overrides):
    """A Hugging Face (sentence-transformers) folder; overrides are SentenceConfig fields."""
    folder = pathlib.Path(folder)
    config, backbone = hf.load_backbone(folder, dtype=dtype)
    if not (folder / "tokenizer.json").is_file():
      raise InputError(folder, "expected tokenizer.json (a fast tokenizer) beside config.json")
    tokenizer = read_tokenizer(folder / "tokenizer.json")
    settings = dataclasses.replace(sentence_config.read(folder), **overrides)
    files = {n: (folder / n).read_bytes() for n in TOKENIZER_FILES if (folder / n).is_file()}
    return cls(backbone, config, tokenizer, settings, tokenizer_files=files, source=folder)

  @classmethod
  def random(cls, hf_config: dict, tokenizer: tokenizers.Tokenizer, settings: sentence_config.SentenceConfig, *,
             seed: int = 0, dtype=jnp.float32):
    """A randomly initialised backbone of a config.json-style dict (for tiny test models)."""
    config_cls, model_cls, _, _ = hf.architecture(hf_config, "config.model.random")
    config = config_cls.from_hf(hf_config)
    return cls(model_cls(config, dtype=dtype, rngs=nnx.Rngs(seed)), config, tokenizer, settings,
               tokenizer_files={"tokenizer.json": tokenizer.to_str().encode()}, source="config.model.random")

  def with_params(self, params) -> "DenseRetriever":
    """The same retriever with other parameters (a pure dict, as training holds them)."""
    out = copy.copy(self)
    out.params = nnx.State(params) if isinstance(params, dict) else params
    return out

  @property
  def backbone(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params)

  @property
  def max_positions(self) -> int:
    """The longest input the backbone's position embeddings allow (RoBERTa's start after padding_idx)."""
    offset = 2 if getattr(self.backbone_config, "is_roberta", False) else 0
    return self.backbone_config.max_position_embeddings - offset

  @property
  def dimension(self) -> int:
    return self.backbone_config.hidden_size

  def embed(self, params, input_ids, attention_mask, token_type_ids=None, token_capacity=None, dropout=None):
    """The pure embedding function of `params` (a pure dict or nnx.State): what the train step
    differentiates and what `encode` jits. [B, L] ids → [B, d]."""
    return embed(nnx.merge(self.graphdef, params), self.settings, input_ids, attention_mask, token_type_ids,
                 token_capacity, dropout)

  def encode(self, texts, batch_size: int = 32, show_progress_bar: bool = False, prompt: str = "") -> np.ndarray:
    """[n, d] for a list of n texts; [d] for one string. Each text is prefixed with `prompt`."""
    return self._encode(texts, "document", batch_size, show_progress_bar, prompt)

  def encode_queries(self, texts, batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
    return self._encode(texts, "query", batch_size, show_progress_bar)

  def encode_documents(self, texts, batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
    return self._encode(texts, "document", batch_size, show_progress_bar)

  def _encode(self, texts, side: str, batch_size, show_progress_bar, prompt: str | None = None) -> np.ndarray:
    """Texts through the text path's `side` (`prompt` None: the side's prompt) to [n, d]."""
    if isinstance(texts, str):
      return self._encode([texts], side, batch_size, show_progress_bar, prompt)[0]
    texts = check_texts(texts)
    batch_size = checks.integer(batch_size, "batch_size", low=1)
    out = np.zeros((len(texts), self.dimension), np.float32)
    batches = self.text.batches(texts, side, batch_size, prompt)
    total = -(-len(texts) // batch_size)
    for i, b in enumerate(tqdm(batches, total=total, disable=not show_progress_bar, desc="encode", unit="batch")):
      emb = self._embed(self.params, b.input_ids, b.attention_mask, b.token_type_ids,
                        token_capacity=unpadding.token_capacity(b.attention_mask) if self.unpad else None)
      out[b.rows] = np.asarray(emb)[:len(b.rows)]
      bad = np.sort(b.rows[~np.isfinite(out[b.rows]).all(1)])
      if len(bad):
        raise InputError(self.source, f"non-finite embeddings for {len(bad)} of the {i * batch_size + len(b.rows)} "
                         f"texts encoded so far (positions {', '.join(map(str, bad[:5]))}"
                         f"{', …' if len(bad) > 5 else ''}): the parameters hold NaN or inf (a diverged checkpoint?)")
    return out

  @staticmethod
  def score(queries, documents):
    """[m, d] × [n, d] → [m, n] inner products, of numpy or JAX arrays (the train step scores with it)."""
    return queries @ documents.T

  def fingerprint(self) -> str:
    """sha256 over the settings and every parameter: equal iff the embeddings are."""
    h = hashlib.sha256(repr(self.settings).encode())
    for leaf in jax.tree.leaves(self.params):
      h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()[:16]

  def save_pretrained(self, folder) -> None:
    """A folder that transformers and sentence-transformers load as they are."""
    with atomic_directory(folder) as partial:
      hf.export_backbone(self.backbone, self.backbone_config, partial)
      for name, data in self.tokenizer_files.items():
        (partial / name).write_bytes(data)
      sentence_config.write(partial, self.settings, self.dimension)

