"""Token-level ANN for multi-vector documents, then exact MaxSim (ColBERT's end-to-end retrieval,
Khattab & Zaharia 2020, §3.6; PyLate's Voyager retrieve):

  1. ScaNN over every document token vector (scann_index.choose_config sizes it by the token count);
  2. each query token fetches its k′ (`k_token`) nearest tokens; a query's candidates are the
     union of their documents;
  3. the candidates are re-scored by the exhaustive index's own `maxsim` on the same padded
     layout (multivector.pad), held on the device and gathered there, so a candidate scores exactly
     as in the exhaustive MaxSimIndex, in batches padded to ×1.25 size buckets (one compilation per size met).

A query with fewer than k candidates fills the rest with index −1, score −inf. A saved index is a
folder: ScaNN's searcher, the token vectors and document lengths (.npy), and metadata.json
(dimension, documents, tokens, k_token, fingerprint, settings, document ids), which `load`
checks against what the caller expects.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from ..errors import InputError
from ..files import as_path, atomic_directory, local_copy, read_json
from . import scann_index
from .multivector import maxsim, pad

METADATA = "metadata.json"
K_TOKEN = 100  # PyLate's retrieve default


@jax.jit
def _rescore(query, documents, chosen):
  """MaxSim of one padded query against the padded documents at `chosen`, gathered on the device."""
  return maxsim(query, {key: value[chosen] for key, value in documents.items()})


def _bucket(n: int) -> int:
  """The smallest of 64, 80, 112, 144, 192, … (each ×1.25 rounded up to a multiple of 16) that
  holds n: about 25% padding at most beyond a few hundred, 22 sizes up to 10,000 candidates."""
  size = 64
  while size < n:
    size = -(-size * 5 // 64) * 16
  return size


class TokenIndex:

  def __init__(self, searcher, vectors: np.ndarray, lengths: np.ndarray, documents: dict, doc_ids: list[str], *,
               k_token: int, fingerprint: str, config: dict):
    """`vectors` [tokens, d] and `lengths` [n] as the searcher holds them; `documents` their padded layout."""
    self.searcher, self.vectors, self.lengths = searcher, vectors, lengths
    self.documents = {key: jnp.asarray(value) for key, value in documents.items()}  # on the device, gathered there
    self.doc_ids, self.k_token, self.fingerprint, self.config = list(doc_ids), k_token, fingerprint, config
    self.num_vectors, self.dimension = len(doc_ids), vectors.shape[1]
    self.token_doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)

  @classmethod
  def build(cls, documents: list[np.ndarray], doc_ids: list[str], fingerprint: str = "",
            overrides: dict | None = None, k_token: int = K_TOKEN, source: str = "TokenIndex overrides"):
    """`documents`: each document's scored token vectors [L_i ≥ 1, d]; overrides as ScannIndex's."""
    if len(documents) != len(doc_ids) or not documents:
      raise ValueError(f"expected token vectors for each of the {len(doc_ids)} documents, got {len(documents)}")
    padded = pad(documents, len(documents), "documents")  # shapes and finiteness checked here
    lengths = np.array([len(d) for d in documents], np.int64)
    if (lengths == 0).any():
      raise ValueError(f"{int((lengths == 0).sum())} documents have no token vectors (positions "
                       f"{np.flatnonzero(lengths == 0)[:5].tolist()})")
    vectors = np.ascontiguousarray(np.concatenate(documents), np.float32)
    config = scann_index.choose_config(len(vectors), overrides, source)
    return cls(scann_index.searcher(vectors, config), vectors, lengths, padded, doc_ids, k_token=k_token,
               fingerprint=fingerprint, config=config)

  def candidates(self, queries: list[np.ndarray]) -> list[np.ndarray]:
    """Each query's candidate documents: those of its tokens' k′ nearest document tokens."""
    flat = np.ascontiguousarray(np.concatenate(queries), np.float32)
    if flat.ndim != 2 or flat.shape[1] != self.dimension:
      raise ValueError(f"expected query token vectors of dimension {self.dimension}, got {flat.shape}")
    tokens, _ = scann_index.search(self.searcher, self.config, flat, min(self.k_token, len(self.vectors)))
    bounds = np.cumsum([0] + [len(q) for q in queries])
    return [np.unique(self.token_doc[t[t >= 0]]) for t in (tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:]))]

  def search(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [m, k], scores float32 [m, k]), best first, among each query's candidates."""
    if not 1 <= k <= self.num_vectors:
      raise ValueError(f"k must be between 1 and the number of documents ({self.num_vectors}), got {k}")
    indices = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    for row, (query, found) in enumerate(zip(queries, self.candidates(queries))):
      chosen = np.zeros(_bucket(len(found)), np.int64)
      chosen[:len(found)] = found
      s = np.asarray(_rescore(pad([query], 1, "queries"), self.documents, chosen))[0, :len(found)]
      top = np.argsort(-s, kind="stable")[:k]
      indices[row, :len(top)], scores[row, :len(top)] = found[top], s[top]
    return indices, scores

  def metadata(self) -> dict:
    return {"dimension": self.dimension, "num_vectors": self.num_vectors, "num_tokens": len(self.vectors),
            "k_token": self.k_token, "fingerprint": self.fingerprint, "config": self.config,
            "doc_ids": self.doc_ids}

  def save(self, directory) -> None:
    """The index as a folder, written whole or not at all (files.atomic_directory)."""
    with atomic_directory(directory) as partial:
      self.searcher.serialize(str(partial), relative_path=True)
      np.save(partial / "vectors.npy", self.vectors)
      np.save(partial / "lengths.npy", self.lengths)
      (partial / METADATA).write_text(json.dumps(self.metadata()))

  @classmethod
  def load(cls, directory, *, dimension: int | None = None, fingerprint: str | None = None) -> "TokenIndex":
    """The index saved in `directory`; a dimension or fingerprint other than the given one is an InputError."""
    directory = as_path(directory)
    path = directory / METADATA
    if not path.is_file():
      raise InputError(path, f"not a token index: expected {METADATA} (written by TokenIndex.save), found no such file")
    meta = read_json(path)
    missing = sorted({"dimension", "num_vectors", "num_tokens", "k_token", "fingerprint", "config", "doc_ids"}
                     - set(meta))
    if missing:
      raise InputError(path, f"expected keys {missing}, found {sorted(meta)}")
    for key, expected in (("dimension", dimension), ("fingerprint", fingerprint)):
      if expected is not None and meta[key] != expected:
        raise InputError(path, f"{key}: expected {expected!r} (the model's), found {meta[key]!r}")
    for name in ("vectors.npy", "lengths.npy", scann_index.ASSETS):
      if not (directory / name).is_file():
        raise InputError(directory / name, "not a token index: no such file")
    with local_copy(directory) as local:
      vectors, lengths = np.load(local / "vectors.npy"), np.load(local / "lengths.npy")
      searcher = scann_ops_pybind.load_searcher(str(local), assets_backcompat_shim=False)
    if vectors.shape != (meta["num_tokens"], meta["dimension"]) or lengths.sum() != meta["num_tokens"]:
      raise InputError(directory / "vectors.npy", f"shape {vectors.shape}: expected ({meta['num_tokens']}, "
                                                  f"{meta['dimension']}) as metadata.json says")
    documents = pad(np.split(vectors, np.cumsum(lengths)[:-1]), len(lengths), "documents")
    return cls(searcher, vectors, lengths, documents, meta["doc_ids"], k_token=meta["k_token"],
               fingerprint=meta["fingerprint"], config=meta["config"])
