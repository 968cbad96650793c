"""A ScaNN maximum-inner-product index over document embeddings, sized from the collection.

`choose_config` picks the searcher from the number of vectors n (every choice overridable):
brute force below 20k, asymmetric hashing (AH, 2 dimensions per 16-centre block, anisotropic
threshold 0.2) plus exact reordering below 100k, and a k-means tree (≈√n leaves) in front
of AH plus reordering above that. A saved index is a folder: ScaNN's serialized searcher
next to `metadata.json` (dimension, number of vectors, document ids, model fingerprint,
settings), which `load` checks against what the caller expects.
"""
import json
import math

import numpy as np
from etils import epath
from scann.scann_ops.py import scann_ops_pybind

from .. import checks
from ..errors import InputError
from ..files import as_path, atomic_directory, local_copy, read_json
from .exact import check_finite

MODES = ("brute_force", "ah", "tree_ah")
KEYS = ("mode", "num_leaves", "num_leaves_to_search", "reorder_k")
BRUTE_FORCE_BELOW = 20_000
AH_BELOW = 100_000
REORDER_K = 100
AH_DIMS_PER_BLOCK = 2
AH_THRESHOLD = 0.2
TRAINING_SAMPLE = 100_000
METADATA = "metadata.json"
ASSETS = "scann_assets.pbtxt"


def auto_mode(num_vectors: int) -> str:
  return "brute_force" if num_vectors < BRUTE_FORCE_BELOW else "ah" if num_vectors < AH_BELOW else "tree_ah"


def check_settings(index_config, source: str) -> None:
  """config.index's ScaNN keys, before the collection's size is known: mode, and integers ≥ 1."""
  checks.choice(index_config.get("mode") or "auto", f"{source}.mode", ("auto",) + MODES)
  for key in KEYS[1:]:
    if index_config.get(key) is not None:
      checks.integer(index_config[key], f"{source}.{key}", low=1)


def choose_config(num_vectors: int, overrides: dict | None = None, source: str = "ScannIndex overrides") -> dict:
  """Settings for n vectors: {mode, num_leaves, num_leaves_to_search, reorder_k}, None where unused.

  tree_ah: num_leaves = round(√n), num_leaves_to_search = ⌈num_leaves / 10⌉ (about a tenth of
  the collection is AH-scored per query); ah and tree_ah rescore the best 100 exactly, or the
  best k when k is larger. On 212k perturbed SciFact vectors (benchmarks/scann_recall.py) this
  gives recall@10 ≈ 0.98 (tree_ah) and ≈ 1.0 (ah); a twentieth of the leaves drops it to 0.94,
  reordering 250 instead of 100 gains < 0.005 at 2/3 of the speed.
  An override set to None, or mode "auto", keeps the size-based choice.
  """
  overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
  unknown = sorted(set(overrides) - set(KEYS))
  if unknown:
    raise InputError(source, f"unknown key(s) {unknown}; expected some of {list(KEYS)}")
  mode = overrides.pop("mode", "auto")
  mode = auto_mode(num_vectors) if mode == "auto" else mode
  if mode not in MODES:
    raise InputError(source, f"mode: expected 'auto' or one of {list(MODES)}, found {mode!r}")
  config = {key: None for key in KEYS} | {"mode": mode}
  if mode != "brute_force":
    config["reorder_k"] = min(REORDER_K, num_vectors)
  if mode == "tree_ah":
    config["num_leaves"] = int(overrides.get("num_leaves", max(1, round(math.sqrt(num_vectors)))))
    config["num_leaves_to_search"] = math.ceil(config["num_leaves"] / 10)
  for key, value in overrides.items():
    if config[key] is None:
      raise InputError(source, f"{key} does not apply to mode {mode!r} ({num_vectors} vectors)")
    config[key] = int(value)
  _check_bounds(config, num_vectors, source)
  return config


def _check_bounds(config: dict, num_vectors: int, source: str) -> None:
  bounds = {"num_leaves": num_vectors, "num_leaves_to_search": config["num_leaves"], "reorder_k": num_vectors}
  for key, upper in bounds.items():
    if config[key] is not None and not 1 <= config[key] <= upper:
      raise InputError(source, f"{key}: expected 1 to {upper}, found {config[key]}")


def searcher(embeddings: np.ndarray, config: dict):
  builder = scann_ops_pybind.builder(embeddings, 10, "dot_product")
  if config["mode"] == "brute_force":
    return builder.score_brute_force().build()
  if config["mode"] == "tree_ah":
    builder = builder.tree(num_leaves=config["num_leaves"], num_leaves_to_search=config["num_leaves_to_search"],
                           training_sample_size=min(TRAINING_SAMPLE, len(embeddings)))
  builder = builder.score_ah(AH_DIMS_PER_BLOCK, anisotropic_quantization_threshold=AH_THRESHOLD,
                             training_sample_size=min(TRAINING_SAMPLE, len(embeddings)))
  return builder.reorder(config["reorder_k"]).build()


def search(searcher, config: dict, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices int64 [m, k], scores float32 [m, k]) of a built searcher, reordering max(reorder_k, k)
  candidates; a slot it could not fill is index -1, score -inf."""
  pre_reorder = None if config["reorder_k"] is None else max(config["reorder_k"], k)
  indices, scores = searcher.search_batched_parallel(queries, final_num_neighbors=k,
                                                     pre_reorder_num_neighbors=pre_reorder)
  empty = np.isnan(scores)
  return np.where(empty, -1, indices).astype(np.int64), np.where(empty, -np.inf, scores).astype(np.float32)


class ScannIndex:
  """Document embeddings [n, d] behind a ScaNN searcher; rows of `search` index `doc_ids`."""

  def __init__(self, searcher, doc_ids: list[str], dimension: int, fingerprint: str, config: dict):
    self.searcher = searcher
    self.doc_ids = doc_ids
    self.dimension = dimension
    self.num_vectors = len(doc_ids)
    self.fingerprint = fingerprint
    self.config = config

  @classmethod
  def build(cls, embeddings: np.ndarray, doc_ids: list[str], fingerprint: str,
            overrides: dict | None = None) -> "ScannIndex":
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(doc_ids) or not len(doc_ids):
      raise ValueError(f"expected embeddings [n > 0, d] for {len(doc_ids)} document ids, got {embeddings.shape}")
    check_finite(embeddings, "embeddings")
    config = choose_config(len(embeddings), overrides)
    return cls(searcher(embeddings, config), list(doc_ids), embeddings.shape[1], fingerprint, config)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [m, k], scores float32 [m, k]) by inner product, best first.

    Reordering looks at max(reorder_k, k) candidates. A slot ScaNN could not fill (a tree
    search whose leaves hold fewer than k vectors) is index -1 with score -inf.
    """
    queries = np.ascontiguousarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dimension:
      raise ValueError(f"expected queries of shape [m, {self.dimension}], got {queries.shape}")
    check_finite(queries, "queries")
    return search(self.searcher, self.config, queries, k)

  def metadata(self) -> dict:
    return {"dimension": self.dimension, "num_vectors": self.num_vectors, "fingerprint": self.fingerprint,
            "config": self.config, "doc_ids": self.doc_ids}

  def save(self, directory) -> None:
    """Writes the index through files.atomic_directory (replacing an older one at `directory`).

    ScaNN's assets are written with relative paths, so the folder stays valid after the rename.
    """
    with atomic_directory(directory) as partial:
      self.searcher.serialize(str(partial), relative_path=True)
      (partial / METADATA).write_text(json.dumps(self.metadata()))

  @classmethod
  def load(cls, directory, *, dimension: int | None = None, fingerprint: str | None = None) -> "ScannIndex":
    """The index saved in `directory`; a dimension or fingerprint other than the given one is an InputError."""
    directory = as_path(directory)
    meta = read_metadata(directory)
    for key, expected in (("dimension", dimension), ("fingerprint", fingerprint)):
      if expected is not None and meta[key] != expected:
        raise InputError(directory / METADATA, f"{key}: expected {expected!r}, found {meta[key]!r}")
    with local_copy(directory) as local:
      searcher = scann_ops_pybind.load_searcher(str(local), assets_backcompat_shim=False)
    return cls(searcher, meta["doc_ids"], meta["dimension"], meta["fingerprint"], meta["config"])


def read_metadata(directory: epath.Path) -> dict:
  """metadata.json of an index folder, checked for its keys and for ScaNN's assets beside it."""
  path = directory / METADATA
  if not path.is_file():
    raise InputError(path, f"not an index: expected {METADATA} (written by ScannIndex.save), found no such file")
  if not (directory / ASSETS).is_file():
    raise InputError(directory / ASSETS, "not an index: expected ScaNN's serialized searcher, found no such file")
  meta = read_json(path)
  missing = sorted({"dimension", "num_vectors", "fingerprint", "config", "doc_ids"} - set(meta))
  if missing:
    raise InputError(path, f"expected keys {missing}, found {sorted(meta)}")
  if len(meta["doc_ids"]) != meta["num_vectors"]:
    raise InputError(path, f"num_vectors: expected {len(meta['doc_ids'])} (the document ids), "
                           f"found {meta['num_vectors']}")
  return meta
