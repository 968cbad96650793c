"""Encode, index, search, rerank, score: one evaluation of a retriever on a BEIR-format collection.

Stage 1 retrieves each query's top_k through the retriever kind's index (dense: ScaNN or exact
search; config.index.kind), or reads them from a TREC run (config.first_stage). Stage 2, when
config.rerank.model names a reranker, rescores each query's top config.rerank.depth with its
score_pairs; the rest of the query's list follows below them in the first stage's order, so
recall at cutoffs beyond the depth stays comparable. The workdir then holds both runs and both
metric tables: first_stage.trec and first_stage.json, and run.trec and results.json for the
final (reranked) ranking.

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
from ..models.reranker import Reranker
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
  checks.integer(config.rerank.depth, f"{prefix}.rerank.depth", low=1)
  checks.integer(config.rerank.batch_size, f"{prefix}.rerank.batch_size", low=1)


def _data_folder(config, workdir: EvalWorkdir) -> epath.Path:
  if config.data:
    return as_path(config.data)
  folder = workdir.generated_data
  if not folder.is_dir():
    synthetic.write_limit_style(folder)
  return folder


def evaluate(config, workdir) -> dict[str, float]:
  """Loads config.model (none with config.first_stage) and config.rerank.model, and evaluates them;
  see evaluate_retriever."""
  check_config(config)
  retriever = None
  if not config.first_stage:
    overrides = {} if config.max_length is None else {"max_length": config.max_length}
    retriever = load(config.model or minilm_path(), dtype=jnp.dtype(config.dtype), **overrides)
    if isinstance(retriever, Reranker):
      raise InputError("config.model", f"{config.model} holds a {retriever.kind.name!r} reranker, which retrieves "
                       "nothing: name it in config.rerank.model, after a retriever or a config.first_stage run")
  reranker = load_reranker(config.rerank.model, config.dtype) if config.rerank.model else None
  return evaluate_retriever(retriever, config, workdir, reranker)


def load_reranker(path, dtype) -> Reranker:
  model = load(path, dtype=jnp.dtype(dtype))
  if not isinstance(model, Reranker):
    raise InputError("config.rerank.model", f"{path} holds a {model.kind.name!r} retriever, not a reranker")
  return model


def evaluate_retriever(retriever, config, workdir, reranker: Reranker | None = None) -> dict[str, float]:
  """Encodes, indexes, searches and scores config.data's split (or scores config.first_stage's run,
  `retriever` unused), then reranks with `reranker` when given; writes the workdir's runs and
  metric tables and returns the final ranking's metrics."""
  check_config(config)
  workdir = EvalWorkdir(check_folder(workdir))
  created = not workdir.root.exists()
  workdir.root.mkdir(parents=True, exist_ok=True)
  try:
    return _evaluate(retriever, reranker, config, workdir)
  except BaseException:
    if created:
      remove_tree(workdir.root)
    raise


def _evaluate(retriever, reranker, config, workdir: EvalWorkdir) -> dict[str, float]:
  collection = beir.load_collection(_data_folder(config, workdir), split=config.split)
  run = _read_first_stage(config, collection) if config.first_stage else _retrieve(retriever, config, collection)
  if reranker is not None:
    trec.write_run(workdir.first_stage_run, run, tag="retrax")
    write_atomic(workdir.first_stage_results, json.dumps(metrics.compute(collection.qrels, run, config.measures),
                                                         indent=2))
    run = _rerank(reranker, config, collection, run)
  else:  # a stale first stage from an earlier evaluation in this workdir would read as this one's
    for path in (workdir.first_stage_run, workdir.first_stage_results):
      if path.exists():
        path.unlink()
  results = metrics.compute(collection.qrels, run, config.measures)
  trec.write_run(workdir.run, run, tag="retrax")
  write_atomic(workdir.results, json.dumps(results, indent=2))
  return results


def _rerank(reranker: Reranker, config, collection, run) -> dict[str, dict[str, float]]:
  """Each query's top config.rerank.depth documents of `run` scored by the reranker, best first;
  the rest of its list below them, in the first stage's order (scores min − 1, min − 2, …)."""
  depth = config.rerank.depth
  ranked = {q: trec.ranked(docs) for q, docs in run.items()}
  slots = [(q, d) for q, docs in ranked.items() for d, _ in docs[:depth]]
  missing = next(((q, d) for q, d in slots if d not in collection.corpus), None)
  if missing:
    raise InputError(config.first_stage or "first stage", f"document {missing[1]!r} (query {missing[0]!r}) is not "
                                                          "in the collection's corpus")
  pairs = [(collection.queries[q], beir.document_text(collection.corpus[d])) for q, d in slots]
  logging.info("reranking %d pairs (depth %d)", len(pairs), depth)
  scores = reranker.predict(pairs, config.rerank.batch_size, config.progress)
  out = {q: {} for q in ranked}
  for (q, d), score in zip(slots, scores):
    out[q][d] = float(score)
  for q, docs in ranked.items():
    floor = min(out[q].values(), default=0.0)
    out[q].update({d: floor - 1 - i for i, (d, _) in enumerate(docs[depth:])})
  return out


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
