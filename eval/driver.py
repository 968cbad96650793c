"""Encode, index, search, score: one evaluation of a retriever on a BEIR-format collection.

The retriever's kind provides the index (dense: ScaNN or exact search; config.index.kind).

Everything that can be checked without the model's outputs is checked before any encoding:
the config (check_config), the collection (beir.load_collection: no empty corpus, queries or
judgments) and the index settings against the corpus size. A failed evaluation removes the
workdir it created; results.json and run.trec appear whole or not at all.
"""
import json
import logging

from etils import epath
import jax.numpy as jnp

from .. import checks
from ..errors import InputError
from ..files import as_path, check_folder, remove_tree, write_atomic
from ..models.load import DTYPES, load
from ..models.wheel import minilm_path
from ..workdirs import EvalWorkdir
from . import beir, metrics, synthetic, trec

INDEX_KINDS = ("scann", "exact")


def check_config(config, prefix: str = "config") -> None:
  """Every key of an evaluation config (configs/eval.py), each error naming `prefix.key`."""
  checks.integer(config.top_k, f"{prefix}.top_k", low=1)
  checks.integer(config.batch_size, f"{prefix}.batch_size", low=1)
  if config.max_length is not None:
    checks.integer(config.max_length, f"{prefix}.max_length", low=1)
  checks.choice(config.dtype, f"{prefix}.dtype", DTYPES)
  if not config.measures:
    raise InputError(f"{prefix}.measures", "expected at least one measure")
  for name in config.measures:
    try:
      metrics.parse(name)
    except ValueError as e:
      raise InputError(f"{prefix}.measures", str(e)) from None
  checks.choice(config.index.kind, f"{prefix}.index.kind", INDEX_KINDS)  # the rest is the kind's (check_index)


def _data_folder(config, workdir: EvalWorkdir) -> epath.Path:
  if config.data:
    return as_path(config.data)
  folder = workdir.generated_data
  if not folder.is_dir():
    synthetic.write_limit_style(folder)
  return folder


def evaluate(config, workdir) -> dict[str, float]:
  """Loads config.model (none with config.first_stage) and evaluates it; see evaluate_retriever."""
  check_config(config)
  retriever = None
  if not config.first_stage:
    overrides = {} if config.max_length is None else {"max_length": config.max_length}
    retriever = load(config.model or minilm_path(), dtype=jnp.dtype(config.dtype), **overrides)
  return evaluate_retriever(retriever, config, workdir)


def evaluate_retriever(retriever, config, workdir) -> dict[str, float]:
  """Encodes, indexes, searches and scores config.data's split (or scores config.first_stage's run,
  `retriever` unused); writes workdir/results.json and run.trec."""
  check_config(config)
  workdir = EvalWorkdir(check_folder(workdir))
  created = not workdir.root.exists()
  workdir.root.mkdir(parents=True, exist_ok=True)
  try:
    return _evaluate(retriever, config, workdir)
  except BaseException:
    if created:
      remove_tree(workdir.root)
    raise


def _evaluate(retriever, config, workdir: EvalWorkdir) -> dict[str, float]:
  collection = beir.load_collection(_data_folder(config, workdir), split=config.split)
  run = _read_first_stage(config, collection) if config.first_stage else _retrieve(retriever, config, collection)
  results = metrics.compute(collection.qrels, run, config.measures)
  trec.write_run(workdir.run, run, tag="retrax")
  write_atomic(workdir.results, json.dumps(results, indent=2))
  return results


def _read_first_stage(config, collection) -> dict[str, dict[str, float]]:
  """config.first_stage's run for the split's queries, each cut to its top_k (trec_eval's order)."""
  run = trec.read_run(config.first_stage)
  return {q: dict(trec.ranked(run.get(q, {}))[:config.top_k]) for q in collection.queries}


def _retrieve(retriever, config, collection) -> dict[str, dict[str, float]]:
  """The top_k documents of each of the split's queries, through the kind's index."""
  doc_ids = list(collection.corpus)
  qids = list(collection.queries)
  retriever.kind.check_index(config.index, len(doc_ids), "config.index")
  logging.info("encoding %d documents and %d queries", len(doc_ids), len(qids))
  docs = retriever.encode_documents([beir.document_text(collection.corpus[d]) for d in doc_ids],
                                    config.batch_size, config.progress)
  queries = retriever.encode_queries([collection.queries[q] for q in qids], config.batch_size, config.progress)
  index = retriever.index(docs, doc_ids, config.index)
  indices, scores = index.search(queries, min(config.top_k, len(doc_ids)))
  return {q: {doc_ids[i]: float(s) for i, s in zip(row, srow) if i >= 0}  # −1: a slot ScaNN could not fill
          for q, row, srow in zip(qids, indices, scores)}
