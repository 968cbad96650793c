"""The host-side retriever: a kind's module (backbone + heads) with its tokenizer, for any kind.

`encode_queries` / `encode_documents` / `encode` take a list of texts (one string: one text) and
return the kind's representations in the caller's order (dense: float32 [n, d]). Texts go
through the kind's text path, sorted by length and padded to fixed buckets, so the jitted
encoder compiles once per bucket. A batch whose real tokens fit a capacity (the last one, or
lengths spread within a bucket) runs unpadded, at a fraction of the bucket
(`unpadding.capacity_fractions`): one more compilation for each capacity met. `unpad = False`
turns that off.

Bad input is an InputError before any encoding: an item that is not a string, a batch size
below 1, a max_length outside 1 … the model's positions. Non-finite representations (NaN or
inf parameters) are an InputError naming the model and how many texts gave them.

With several local devices (an 8-GPU box, a TPU host), each batch is split over all of them
(a `data` mesh of `jax.local_devices()`): rows padded to a multiple of the device count by
repeating the last, each device's rows unpadded on their own (`unpadding.pack_index`).
"""
import jax
import numpy as np
import tokenizers
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from .. import checks, ops
from ..errors import InputError
from .backbones import unpadding
from .host_model import HostModel
from .text import check_texts


class Retriever(HostModel):
  unpad = True

  def __init__(self, module: nnx.Module, tokenizer: tokenizers.Tokenizer, *,
               tokenizer_files: dict | None = None, source="model"):
    super().__init__(module, tokenizer, tokenizer_files=tokenizer_files, source=source)
    self._encode_batch = ops.jit(self.encode_tokens, static_argnames=("side", "packing"))
    self._encode_sharded = ops.jit(self.encode_tokens, static_argnames=("side",))
    self._replicated = (None, None)  # (params, their copy on every local device)

  def encode_tokens(self, params, tokens: dict, side: str, packing=None):
    """The module's representations of one token batch, a pure function of `params` (what `encode` jits)."""
    return nnx.merge(self.graphdef, params).encode(tokens, side, packing=packing)

  def score(self, queries, documents):
    """The kind's score, [m, n], of what encode_queries and encode_documents return."""
    return self.module.score(self.kind.batched(queries, "queries"), self.kind.batched(documents, "documents"))

  def encode(self, texts, batch_size: int = 32, show_progress_bar: bool = False, prompt: str = ""):
    """Each text prefixed with `prompt` and encoded as a document."""
    return self._encode(texts, "document", batch_size, show_progress_bar, prompt)

  def encode_queries(self, texts, batch_size: int = 32, show_progress_bar: bool = False):
    return self._encode(texts, "query", batch_size, show_progress_bar)

  def encode_documents(self, texts, batch_size: int = 32, show_progress_bar: bool = False):
    return self._encode(texts, "document", batch_size, show_progress_bar)

  def _encode(self, texts, side: str, batch_size, show_progress_bar, prompt: str | None = None):
    """Texts through the text path's `side` (`prompt` None: the side's prompt) to representations."""
    if isinstance(texts, str):
      return self._encode([texts], side, batch_size, show_progress_bar, prompt)[0]
    texts = check_texts(texts)
    batch_size = checks.integer(batch_size, "batch_size", low=1)
    module = self.module
    items = [None] * len(texts)
    batches = self.text.batches(texts, side, batch_size, prompt)
    total = -(-len(texts) // batch_size)
    for i, b in enumerate(tqdm(batches, total=total, disable=not show_progress_bar, desc="encode", unit="batch")):
      tokens = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "token_type_ids": b.token_type_ids}
      jit_side = None if self.kind.symmetric else side  # one compilation per bucket for both sides
      out = module.unbatch(self._encode_on_devices(tokens, jit_side), len(b.rows))
      bad = np.sort([r for r, item in zip(b.rows, out) if not np.isfinite(item).all()])
      if len(bad):
        raise InputError(self.source, f"non-finite representations for {len(bad)} of the "
                         f"{i * batch_size + len(b.rows)} texts encoded so far (positions "
                         f"{', '.join(map(str, bad[:5]))}{', …' if len(bad) > 5 else ''}): the parameters hold "
                         "NaN or inf (a diverged checkpoint?)")
      for r, item in zip(b.rows, out):
        items[r] = item
    return module.gather(items)

  def _encode_on_devices(self, tokens: dict, side):
    """One token batch's representations, on the one device or split over every local device."""
    devices = jax.local_devices()
    if len(devices) == 1:
      capacity = unpadding.token_capacity(tokens["attention_mask"]) if self.unpad else None
      return self._encode_batch(self.params, tokens, side, packing=capacity)
    shards = len(devices)
    extra = -len(tokens["input_ids"]) % shards
    tokens = {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for k, v in tokens.items() if v is not None}
    mask = tokens["attention_mask"]
    capacity = unpadding.shard_capacity(int(unpadding.shard_tokens(mask, shards).max()), mask.size // shards)
    packing = unpadding.pack_index(mask, shards, capacity) if self.unpad and capacity else None
    split = NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec("data"))
    if self._replicated[0] is not self.params:
      self._replicated = (self.params, jax.device_put(self.params, NamedSharding(split.mesh, PartitionSpec())))
    tokens, packing = jax.device_put((tokens, packing), split)
    return self._encode_sharded(self._replicated[1], tokens, side, packing)

  def index(self, documents, doc_ids, index_config=None):
    """The kind's index over encoded documents (index_config None: exact search)."""
    return self.kind.index(documents, doc_ids, index_config, self.fingerprint())

