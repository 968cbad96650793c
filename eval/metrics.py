"""Retrieval metrics under ir-measures names, equal to trec_eval's (pytrec_eval's) values.

Conventions, all as trec_eval:
- ranking: score descending, scores rounded to float32 first (trec_eval stores them so),
  ties broken by docid in descending string order;
- relevant: grade >= 1 (relevance level 1), for R, P, RR and AP; nDCG gains are the grades,
  negative grades counting 0, discounted by 1 / log2(rank + 1);
- the mean runs over every query in qrels with at least one judgment (trec_eval -c): a query
  missing from the run scores 0, and so does a judged query without relevant documents
  (pytrec_eval reports 0 for it); run queries absent from qrels are ignored.
"""
import re

import numpy as np

MEASURE = re.compile(r"(nDCG|R|P|RR|AP)(?:@([1-9][0-9]*))?")
NEEDS_CUTOFF = ("R", "P")
FORMS = "nDCG@k, nDCG, R@k, P@k, RR@k, RR, AP@k, AP (k a positive integer)"


def parse(name: str) -> tuple[str, int | None]:
  """'nDCG@10' -> ('nDCG', 10), 'AP' -> ('AP', None); ValueError for other names."""
  match = MEASURE.fullmatch(name)
  if not match or (match[1] in NEEDS_CUTOFF and match[2] is None):
    raise ValueError(f"unknown measure {name!r}; supported: {FORMS}")
  return match[1], None if match[2] is None else int(match[2])


def _ranked_grades(judged: dict[str, int], docs: dict[str, float]) -> np.ndarray:
  """Grades of the run's documents in trec_eval's order (0 for unjudged)."""
  ids = np.array(list(docs), dtype=str)
  scores = np.fromiter(docs.values(), dtype=np.float32, count=len(docs))
  order = np.lexsort((ids, scores))[::-1]
  return np.array([judged.get(d, 0) for d in ids[order]], dtype=np.float64)


def _padded(rows, width: int) -> np.ndarray:
  """Rows truncated or zero-padded to `width` columns."""
  out = np.zeros((len(rows), width))
  for i, row in enumerate(rows):
    row = row[:width]
    out[i, :len(row)] = row
  return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den, 0 where den is 0."""
  return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _measure(family, k, grades, ideal, num_rel):
  """Per-query values of one measure; grades [Q, D] in rank order, ideal [Q, I] sorted descending.

  P@k = rel(1..k) / k; R@k = rel(1..k) / num_rel; RR@k = 1 / (first relevant rank <= k);
  AP@k = sum over relevant ranks r <= k of rel(1..r) / r, over num_rel;
  nDCG@k = sum_{r<=k} gain_r / log2(r + 1), over the same for the ideal ranking.
  """
  rel = (grades >= 1)[:, :k]
  ranks = np.arange(1, rel.shape[1] + 1)
  if family == "P":
    return rel.sum(1) / k
  if family == "R":
    return _ratio(rel.sum(1).astype(float), num_rel)
  if family == "RR":
    return (rel / ranks).max(1, initial=0.0)
  if family == "AP":
    return _ratio((np.cumsum(rel, 1) / ranks * rel).sum(1), num_rel)
  discount = 1.0 / np.log2(np.arange(2, max(grades.shape[1], ideal.shape[1]) + 2))
  gains, best = np.maximum(grades[:, :k], 0), ideal[:, :k]
  return _ratio(gains @ discount[:gains.shape[1]], best @ discount[:best.shape[1]])


def _values(qrels, run, measures) -> tuple[list[str], dict[str, np.ndarray]]:
  """(judged query ids, {measure name: per-query values in that order})."""
  parsed = {name: parse(name) for name in measures}
  qids = [qid for qid, judged in qrels.items() if judged]
  if not qids:
    raise ValueError("qrels hold no judged query")
  cutoffs = [k for _, k in parsed.values()]
  rows = [_ranked_grades(qrels[qid], run.get(qid, {})) for qid in qids]
  depth = max(len(row) for row in rows)
  if None not in cutoffs:
    depth = min(depth, max(cutoffs))
  grades = _padded(rows, depth)
  positive = [sorted((g for g in qrels[qid].values() if g > 0), reverse=True) for qid in qids]
  ideal = _padded(positive, max(len(p) for p in positive))
  num_rel = np.array([sum(g >= 1 for g in qrels[qid].values()) for qid in qids], dtype=float)
  return qids, {name: _measure(family, k, grades, ideal, num_rel) for name, (family, k) in parsed.items()}


def per_query(qrels, run, measures) -> dict[str, dict[str, float]]:
  """{qid: {measure: value}} for every judged query in qrels (see the module docstring)."""
  qids, values = _values(qrels, run, measures)
  return {qid: {name: float(v[i]) for name, v in values.items()} for i, qid in enumerate(qids)}


def compute(qrels, run, measures) -> dict[str, float]:
  """{measure: mean over the judged queries in qrels} (see the module docstring)."""
  _, values = _values(qrels, run, measures)
  return {name: float(v.mean()) for name, v in values.items()}
