"""The evaluation driver's input: the whole config and the collection are checked before any encoding;
judgments of documents missing from the corpus count as pytrec_eval counts them; a failure leaves no workdir."""
import json

import ml_collections
import numpy as np
import pytest

from retrax.configs import eval as eval_config
from retrax.errors import InputError
from retrax.eval import beir, driver, trec
from retrax.models.kinds.dense import Dense

HEADER = "query-id\tcorpus-id\tscore\n"


def _collection(folder, qrels=HEADER + "q1\td1\t1\nq1\tgone\t1\nq2\td2\t2\nq2\td3\t1\nq3\td4\t1\n", **replace):
  files = {
      "corpus.jsonl": "".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(
          ["cats and dogs", "cats purr", "dogs bark loudly", "dogs bark", "birds sing", "fish swim"])),
      "queries.jsonl": "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in
                               (("q1", "purring cats"), ("q2", "barking dogs"), ("q3", "singing birds"))),
      "qrels/test.tsv": qrels, **replace}
  for name, text in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
  return folder


class BagOfWords:
  """A transparent retriever: counts of the collection's words."""
  vocab = ("cats", "dogs", "purr", "bark", "birds", "sing", "fish", "barking", "purring", "singing", "loudly")

  def _encode(self, texts, *_):
    return np.array([[t.lower().split().count(w) + 0.01 * i for i, w in enumerate(self.vocab)] for t in texts],
                    np.float32)
  encode_documents = encode_queries = _encode
  kind = Dense  # its vectors are indexed as a dense retriever's

  def fingerprint(self):
    return "bag-of-words"

  def index(self, documents, doc_ids, index_config=None):
    return self.kind.index(documents, doc_ids, index_config, self.fingerprint())


class NeverEncodes(BagOfWords):
  def _encode(self, texts, *_):
    raise AssertionError("encoded before the input was checked")
  encode_documents = encode_queries = _encode


def _config(data, **overrides):
  config = eval_config.get_config()
  config.data, config.progress = str(data), False
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.parametrize("overrides, expected", [
    ({"measures": ("nDCG@10", "bogus")}, "config.measures: unknown measure 'bogus'"),
    ({"measures": ()}, "config.measures: expected at least one measure"),
    ({"top_k": 0}, "config.top_k: expected an integer ≥ 1, got 0"),
    ({"batch_size": -4}, "config.batch_size: expected an integer ≥ 1, got -4"),
    ({"dtype": "int8"}, "config.dtype: expected one of ['float32', 'bfloat16', 'float16'], got 'int8'"),
    ({"max_length": 0}, "config.max_length: expected an integer ≥ 1, got 0"),
    ({"index.kind": "faiss"}, "config.index.kind: expected one of ['scann', 'exact'], got 'faiss'"),
    ({"index.mode": "fast"}, "config.index.mode: expected one of ['auto', 'brute_force', 'ah', 'tree_ah']"),
    ({"index.reorder_k": 0}, "config.index.reorder_k: expected an integer ≥ 1, got 0"),
    ({"index.mode": "brute_force", "index.num_leaves": 3}, "config.index: num_leaves does not apply to mode"),
    ({"index.mode": "tree_ah", "index.num_leaves": 100}, "config.index: num_leaves: expected 1 to 6, found 100"),
    ({"index.k_token": 5}, "config.index.k_token: a setting of the colbert kind's token index; a dense index has none"),
])
def test_the_config_is_checked_before_any_encoding(tmp_path, overrides, expected):
  with pytest.raises(InputError, match="^" + expected.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
    driver.evaluate_retriever(NeverEncodes(), _config(_collection(tmp_path / "data"), **overrides), tmp_path / "out")
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text, expected", [
    ("corpus.jsonl", "", "corpus.jsonl: holds no documents"),
    ("queries.jsonl", "", "queries.jsonl: holds no queries"),
    ("qrels/test.tsv", HEADER, "test.tsv: holds no judgments"),
    ("qrels/test.tsv", "x1\td1\t1\n", "test.tsv: none of its 1 judged queries is in"),
])
def test_empty_inputs_fail_before_any_encoding_and_leave_no_workdir(tmp_path, name, text, expected):
  with pytest.raises(InputError, match=expected):
    driver.evaluate_retriever(NeverEncodes(), _config(_collection(tmp_path / "data", **{name: text})), tmp_path / "o")
  assert not (tmp_path / "o").exists()


def test_an_existing_workdir_is_kept_when_evaluation_fails(tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "notes.txt").write_text("mine")
  with pytest.raises(InputError):
    driver.evaluate_retriever(NeverEncodes(), _config(_collection(tmp_path / "data"), top_k=0), tmp_path / "out")
  assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["exact", "scann"])
def test_judgments_of_missing_documents_count_as_in_pytrec_eval(tmp_path, kind):
  """q1 judges d1 and 'gone' (not in the corpus): R@10 is 1/2 for it, as pytrec_eval gives on the file's qrels."""
  pytrec_eval = pytest.importorskip("pytrec_eval")
  folder = _collection(tmp_path / "data")
  measures = {"nDCG@10": "ndcg_cut_10", "R@2": "recall_2", "R@10": "recall_10", "AP": "map"}
  ours = driver.evaluate_retriever(BagOfWords(), _config(folder, **{"index.kind": kind, "measures": tuple(measures)}),
                                   tmp_path / "out")
  qrels = beir.read_qrels(folder / "qrels" / "test.tsv")
  run = trec.read_run(tmp_path / "out" / "run.trec")
  reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.2,10", "map"}).evaluate(run)
  assert reference["q1"]["recall_10"] == 0.5
  for name, key in measures.items():
    assert ours[name] == pytest.approx(np.mean([r[key] for r in reference.values()]), abs=1e-6), name
  assert json.loads((tmp_path / "out" / "results.json").read_text()) == ours


def test_a_trec_run_stands_in_for_the_first_stage(tmp_path):
  """config.first_stage: the run's top_k per query, for the split's queries, scored as retrieval's
  own run is; no model is used."""
  folder = _collection(tmp_path / "data")
  retrieved = driver.evaluate_retriever(BagOfWords(), _config(folder, **{"index.kind": "exact"}), tmp_path / "out")
  scored = driver.evaluate(_config(folder, first_stage=str(tmp_path / "out" / "run.trec")), tmp_path / "again")
  assert scored == retrieved
  assert trec.read_run(tmp_path / "again" / "run.trec") == trec.read_run(tmp_path / "out" / "run.trec")
  cut = driver.evaluate(_config(folder, first_stage=str(tmp_path / "out" / "run.trec"), top_k=1), tmp_path / "top1")
  assert all(len(docs) <= 1 for docs in trec.read_run(tmp_path / "top1" / "run.trec").values())
  assert cut["R@10"] <= retrieved["R@10"]
