"""Encode, index, search, score: one evaluation of a retriever on a BEIR-format collection."""
import json
import logging
import pathlib

import jax.numpy as jnp

from ..errors import InputError
from ..index.exact import ExactIndex
from ..index.scann_index import ScannIndex
from ..models.load import load
from ..models.wheel import minilm_path
from ..files import write_atomic
from . import beir, metrics, synthetic, trec

SCANN_KEYS = ("mode", "num_leaves", "num_leaves_to_search", "reorder_k")


def _data_folder(config, workdir: pathlib.Path) -> pathlib.Path:
  if config.data:
    return pathlib.Path(config.data)
  folder = workdir / "limit-synthetic"
  if not folder.is_dir():
    synthetic.write_limit_style(folder)
  return folder


def _search(config, doc_emb, query_emb, doc_ids, fingerprint):
  """(indices, scores) [m, k] of the top documents per query, by exact search or ScaNN."""
  k = min(config.top_k, len(doc_ids))
  if config.index.kind == "exact":
    return ExactIndex(doc_emb).search(query_emb, k)
  if config.index.kind != "scann":
    raise InputError("config.index.kind", f"expected 'scann' or 'exact', got {config.index.kind!r}")
  overrides = {key: config.index[key] for key in SCANN_KEYS}
  return ScannIndex.build(doc_emb, doc_ids, fingerprint, overrides).search(query_emb, k)


def evaluate(config, workdir) -> dict[str, float]:
  """Loads config.model and evaluates it; see evaluate_retriever."""
  overrides = {} if config.max_length is None else {"max_length": config.max_length}
  retriever = load(config.model or minilm_path(), dtype=jnp.dtype(config.dtype), **overrides)
  return evaluate_retriever(retriever, config, workdir)


def evaluate_retriever(retriever, config, workdir) -> dict[str, float]:
  """Encodes, indexes, searches and scores config.data's split; writes workdir/results.json and run.trec."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  collection = beir.load_collection(_data_folder(config, workdir), split=config.split)
  doc_ids = list(collection.corpus)
  qids = list(collection.queries)
  logging.info("encoding %d documents and %d queries", len(doc_ids), len(qids))
  doc_emb = retriever.encode_documents([beir.document_text(collection.corpus[d]) for d in doc_ids],
                                       config.batch_size, config.progress)
  query_emb = retriever.encode_queries([collection.queries[q] for q in qids], config.batch_size, config.progress)
  indices, scores = _search(config, doc_emb, query_emb, doc_ids, retriever.fingerprint())
  run = {q: {doc_ids[i]: float(s) for i, s in zip(row, srow) if i >= 0}  # −1: a slot ScaNN could not fill
         for q, row, srow in zip(qids, indices, scores)}
  results = metrics.compute(collection.qrels, run, config.measures)
  trec.write_run(workdir / "run.trec", run, tag="retrax")
  write_atomic(workdir / "results.json", json.dumps(results, indent=2))
  return results
