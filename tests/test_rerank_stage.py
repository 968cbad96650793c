"""Evaluation in two stages: a first-stage run, then a reranker's score_pairs over each query's
top `depth`; both runs and both metric tables are written. The reranker is the tiny test kind
(tests/tiny_kinds.py), saved and loaded back through retrax.load."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import retrax
from retrax.configs import eval as eval_config
from retrax.errors import InputError
from retrax.eval import beir, driver, metrics, synthetic, trec
from retrax.models import load
from retrax.models.reranker import Reranker
from retrax.models.vocab import word_level_tokenizer
from retrax.models.wheel import minilm_path

from tiny_kinds import BERT, TinyReranker, TinyRerankerSettings, register

DEPTH, TOP_K = 4, 10


@pytest.fixture
def reranker_folder(tmp_path, monkeypatch):
  register(monkeypatch, TinyReranker)
  synthetic.write_limit_style(tmp_path / "data", num_people=12, num_attributes=20)
  collection = beir.load_collection(tmp_path / "data", "test")
  texts = [beir.document_text(d) for d in collection.corpus.values()] + list(collection.queries.values())
  tokenizer = word_level_tokenizer(texts, BERT["vocab_size"])
  model = load.random(BERT, tokenizer, TinyRerankerSettings(), kind=TinyReranker.name, seed=3)
  model.save_pretrained(tmp_path / "reranker")
  return tmp_path / "reranker", collection


def _first_stage(collection, path):
  """Each query's TOP_K documents at random scores, one relevant among them."""
  rng = np.random.default_rng(0)
  doc_ids = list(collection.corpus)
  run = {}
  for q in collection.queries:
    chosen = [str(d) for d in rng.choice(doc_ids, TOP_K, replace=False)]
    chosen[-1] = next(iter(collection.qrels[q]))
    run[q] = {d: float(s) for d, s in zip(dict.fromkeys(chosen), rng.random(TOP_K))}
  trec.write_run(path, run)
  return run


def _config(data, **overrides):
  config = eval_config.get_config()
  config.data, config.top_k, config.progress = str(data), TOP_K, False
  config.rerank.depth = DEPTH
  config.update_from_flattened_dict(overrides)
  return config


def test_the_top_depth_is_reranked_and_both_stages_are_written(tmp_path, reranker_folder):
  folder, collection = reranker_folder
  first = _first_stage(collection, tmp_path / "first.trec")
  config = _config(tmp_path / "data", first_stage=str(tmp_path / "first.trec"), **{"rerank.model": str(folder)})
  results = driver.evaluate(config, tmp_path / "out")

  reranker = retrax.load(folder)
  assert isinstance(reranker, Reranker)
  module = reranker.module
  final, stage_one = trec.read_run(tmp_path / "out" / "run.trec"), trec.read_run(tmp_path / "out" / "first_stage.trec")
  assert stage_one.keys() == first.keys()
  for q, docs in first.items():
    assert stage_one[q] == pytest.approx(docs)
  for q, docs in first.items():
    ranked = [d for d, _ in trec.ranked(docs)]
    expected = {}
    for d in ranked[:DEPTH]:  # each pair alone, unpadded: the reference for bucketing and order
      (ids, types), = reranker.text.pair_rows([collection.queries[q]], [beir.document_text(collection.corpus[d])],
                                              reranker.max_length)
      tokens = {"input_ids": np.asarray([[ids]]), "attention_mask": np.ones((1, 1, len(ids)), np.int32),
                "token_type_ids": np.asarray([[types]])}
      expected[d] = float(module.score_pairs(tokens)[0, 0])
    got = [d for d, _ in trec.ranked(final[q])]
    assert got[:DEPTH] == [d for d, _ in trec.ranked(expected)]
    assert got[DEPTH:] == ranked[DEPTH:]  # the rest, in the first stage's order
    np.testing.assert_allclose([final[q][d] for d in expected], list(expected.values()), rtol=1e-5, atol=1e-6)
  assert results == metrics.compute(collection.qrels, final, config.measures)
  stage_one_results = (tmp_path / "out" / "first_stage.json").read_text()
  assert driver.json.loads(stage_one_results) == metrics.compute(collection.qrels, first, config.measures)
  assert results != driver.json.loads(stage_one_results)  # the reranker moved documents


def test_predict_and_rank_follow_the_pairs_order(reranker_folder):
  folder, collection = reranker_folder
  reranker = retrax.load(folder)
  query = next(iter(collection.queries.values()))
  documents = [beir.document_text(d) for d in list(collection.corpus.values())[:7]]
  scores = reranker.predict([(query, d) for d in documents], batch_size=3)
  one_by_one = np.concatenate([reranker.predict([(query, d)]) for d in documents])
  np.testing.assert_allclose(scores, one_by_one, rtol=1e-5, atol=1e-6)
  ranking = reranker.rank(query, documents, top_k=3, return_documents=True)
  assert [r["corpus_id"] for r in ranking] == list(np.argsort(-scores, kind="stable")[:3])
  assert ranking[0]["text"] == documents[ranking[0]["corpus_id"]]
  with pytest.raises(InputError, match="item 1 is str"):
    reranker.predict([(query, documents[0]), "not a pair"])


def test_a_retriever_named_as_the_reranker_is_refused(tmp_path):
  synthetic.write_limit_style(tmp_path / "data", num_people=12, num_attributes=20)
  config = _config(tmp_path / "data", **{"rerank.model": str(minilm_path())})
  with pytest.raises(InputError, match="config.rerank.model: .* holds a 'dense' retriever, not a reranker"):
    driver.evaluate(config, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_a_reranker_named_as_the_retriever_is_refused(tmp_path, reranker_folder):
  folder, _ = reranker_folder
  with pytest.raises(InputError, match="config.model: .* holds a 'tiny_reranker' reranker, which retrieves nothing"):
    driver.evaluate(_config(tmp_path / "data", model=str(folder)), tmp_path / "out")


@pytest.mark.parametrize("key", ["rerank.depth", "rerank.batch_size"])
def test_rerank_settings_are_checked(tmp_path, key):
  with pytest.raises(InputError, match=f"config.{key}"):
    driver.check_config(_config(tmp_path, **{key: 0}))


def test_the_command_prints_both_tables(tmp_path, reranker_folder):
  """python -m retrax.eval with the test kind registered (a launcher stands in for an installed kind)."""
  folder, collection = reranker_folder
  _first_stage(collection, tmp_path / "first.trec")
  launcher = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); import tiny_kinds; "
              "from retrax.models import kinds; kinds.KINDS = {'tiny_reranker': tiny_kinds.TinyReranker, "
              "**kinds.KINDS}; runpy.run_module('retrax.eval', run_name='__main__', alter_sys=True)")
  done = subprocess.run(
      [sys.executable, "-c", launcher, str(pathlib.Path(__file__).parent), "--config",
       str(pathlib.Path(eval_config.__file__)), "--workdir", str(tmp_path / "out"), "--config.progress=False",
       f"--config.data={tmp_path / 'data'}", f"--config.first_stage={tmp_path / 'first.trec'}",
       f"--config.top_k={TOP_K}", f"--config.rerank.model={folder}", f"--config.rerank.depth={DEPTH}"],
      capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  first = driver.json.loads((tmp_path / "out" / "first_stage.json").read_text())
  final = driver.json.loads((tmp_path / "out" / "results.json").read_text())
  lines = done.stdout.strip().splitlines()
  assert lines[0].split() == ["first", "reranked"]
  for line, name in zip(lines[1:], final):
    assert line.split() == [name, f"{first[name]:.4f}", f"{final[name]:.4f}"]
