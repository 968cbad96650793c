"""Metrics against pytrec_eval (trec_eval) on random runs with ties, graded qrels and missing queries."""
import math
import random
import re

import numpy as np
import pytest

from retrax.eval import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

# ours -> (pytrec_eval measure family, key in its output)
REFERENCE = {
    "nDCG@1": "ndcg_cut_1", "nDCG@3": "ndcg_cut_3", "nDCG@10": "ndcg_cut_10", "nDCG@100": "ndcg_cut_100",
    "nDCG": "ndcg", "R@1": "recall_1", "R@5": "recall_5", "R@100": "recall_100", "P@1": "P_1", "P@5": "P_5",
    "P@10": "P_10", "P@1000": "P_1000", "RR": "recip_rank", "AP": "map", "AP@10": "map_cut_10",
}
PYTREC_MEASURES = {"ndcg_cut.1,3,10,100", "ndcg", "recall.1,5,100", "P.1,5,10,1000", "recip_rank", "map",
                   "map_cut.10"}
RR_CUTOFFS = (1, 3, 10)


def _random_case(seed: int, num_queries: int = 300):
  """Graded qrels (0..3) and runs mixing tied, float32-colliding and continuous scores."""
  rng = random.Random(seed)
  qrels, run = {}, {}
  for i in range(num_queries):
    pool = [f"d{j}" for j in range(rng.randint(1, 150))]
    judged = rng.sample(pool, rng.randint(1, min(len(pool), 30)))
    qrels[f"q{i}"] = {d: rng.choice((0, 0, 1, 2, 3)) for d in judged}
    kind = i % 3
    scores = {0: lambda: rng.randint(0, 4) / 4,                       # many exact ties
              1: lambda: 1.0 + rng.randint(0, 3) * 1e-9,              # distinct doubles, equal float32
              2: rng.random}[kind]
    run[f"q{i}"] = {d: scores() for d in rng.sample(pool, rng.randint(0, len(pool)))}
  del run["q0"]                                    # missing from the run
  run["q1"] = {}                                   # empty run
  qrels["q2"] = {"d0": 0, "d1": 0}                 # judged, nothing relevant
  run["q2"] = {"d0": 1.0, "d1": 0.5}
  run["unjudged"] = {"d0": 1.0}                    # not in qrels: ignored
  return qrels, run


def _trec_order(docs: dict[str, float]) -> list[str]:
  """float32 score descending, docid descending."""
  return [d for d, _ in sorted(sorted(docs.items(), reverse=True), key=lambda x: np.float32(x[1]), reverse=True)]


def _reference(qrels, run):
  """pytrec_eval per query under our names, 0 for judged queries it does not report (trec_eval -c)."""
  ref = pytrec_eval.RelevanceEvaluator(qrels, PYTREC_MEASURES).evaluate(run)
  out = {q: {ours: ref.get(q, {}).get(theirs, 0.0) for ours, theirs in REFERENCE.items()} for q in qrels}
  for k in RR_CUTOFFS:
    top = {q: {d: docs[d] for d in _trec_order(docs)[:k]} for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top)
    for q in qrels:
      out[q][f"RR@{k}"] = rr.get(q, {}).get("recip_rank", 0.0)
  return out


@pytest.mark.parametrize("seed", range(4))
def test_per_query_matches_pytrec_eval(seed):
  qrels, run = _random_case(seed)
  names = list(REFERENCE) + [f"RR@{k}" for k in RR_CUTOFFS]
  ours = metrics.per_query(qrels, run, names)
  reference = _reference(qrels, run)
  assert set(ours) == set(qrels)
  for q in qrels:
    for name in names:
      assert ours[q][name] == pytest.approx(reference[q][name], abs=1e-6), (q, name)
  assert ours["q0"] == ours["q1"] == ours["q2"] == {name: 0.0 for name in names}


@pytest.mark.parametrize("seed, names", [(0, ["nDCG@10", "AP", "RR@10", "R@100"]), (1, ["P@5", "nDCG@3", "RR@1"])])
def test_mean_runs_over_all_judged_queries(seed, names):
  qrels, run = _random_case(seed)
  reference = _reference(qrels, run)
  ours = metrics.compute(qrels, run, names)
  assert list(ours) == names
  for name, value in ours.items():
    assert value == pytest.approx(np.mean([reference[q][name] for q in qrels]), abs=1e-6)


def test_hand_computed_ranking_with_ties():
  qrels = {"q": {"d9": 1, "d10": 2, "a": 3, "z": 0}}
  run = {"q": {"a": 1.0, "d10": 1.0, "d9": 1.0, "z": 1.0, "b": 0.5}}  # tie order: z, d9, d10, a, then b
  got = metrics.per_query(qrels, run, ["P@1", "RR", "AP", "nDCG@3", "R@2", "P@10"])["q"]
  assert got["P@1"] == 0.0 and got["RR"] == 0.5 and got["R@2"] == pytest.approx(1 / 3) and got["P@10"] == 0.3
  assert got["AP"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
  dcg = 1 / math.log2(3) + 2 / math.log2(4)
  ideal = 3 + 2 / math.log2(3) + 1 / math.log2(4)
  assert got["nDCG@3"] == pytest.approx(dcg / ideal)


def test_scores_rank_as_float32():
  qrels = {"q": {"a": 1, "b": 0}}
  assert metrics.compute(qrels, {"q": {"a": 1.0 + 1e-9, "b": 1.0}}, ["P@1"]) == {"P@1": 0.0}
  assert metrics.compute(qrels, {"q": {"a": 1.0 + 1e-6, "b": 1.0}}, ["P@1"]) == {"P@1": 1.0}


def test_negative_grades_gain_nothing():
  qrels = {"q": {"a": -1, "b": 2, "c": 1}}
  got = metrics.compute(qrels, {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}, ["nDCG", "AP"])
  ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg", "map"}).evaluate({"q": {"a": 3.0, "b": 2.0, "c": 1.0}})["q"]
  assert got == pytest.approx({"nDCG": ref["ndcg"], "AP": ref["map"]}, abs=1e-12)
  assert got["AP"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_queries_without_judgments_are_not_queries():
  qrels = {"q": {"a": 1}, "empty": {}}
  assert metrics.compute(qrels, {"q": {"a": 1.0}}, ["RR"]) == {"RR": 1.0}
  with pytest.raises(ValueError, match="no judged query"):
    metrics.compute({"empty": {}}, {}, ["RR"])


@pytest.mark.parametrize("name", ["ndcg@10", "R", "P", "MRR@10", "nDCG@0", "AP@", "R@10.5", "recall_10"])
def test_unknown_measure_lists_supported_forms(name):
  with pytest.raises(ValueError, match=re.escape(f"unknown measure {name!r}; supported: nDCG@k, nDCG, R@k, P@k")):
    metrics.compute({"q": {"a": 1}}, {}, [name])


def test_parse():
  assert metrics.parse("nDCG@10") == ("nDCG", 10)
  assert metrics.parse("RR") == ("RR", None)
  assert metrics.parse("AP@1000") == ("AP", 1000)
