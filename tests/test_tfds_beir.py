"""The tfds BEIR builder: build without tensorflow, read back through tfds.data_source and grain, exactly."""
import importlib.abc
import importlib.util
import sys

import grain
import pytest
import tensorflow_datasets as tfds

from retrax.eval import beir, synthetic, tfds_beir


class _HideTensorflow(importlib.abc.MetaPathFinder):
  """Wraps an import finder; it finds no module named tensorflow."""

  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return self.finder.find_spec(name, path, target)


@pytest.fixture
def no_tensorflow(monkeypatch):
  """tensorflow is not importable, as on a machine without it (the venv has none; this holds elsewhere too)."""
  for name in [m for m in sys.modules if m.split(".")[0] == "tensorflow"]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setattr(sys, "meta_path", [_HideTensorflow(f) for f in sys.meta_path])
  assert importlib.util.find_spec("tensorflow") is None
  yield
  assert "tensorflow" not in sys.modules


def _source(data_dir, name, part, split):
  return tfds.data_source(f"beir_collection/{name}-{part}", split=split, data_dir=str(data_dir))


def _decoded(record: dict) -> dict:
  """Text from UTF-8 bytes, numbers as int."""
  return {k: v.decode("utf-8") if isinstance(v, bytes) else int(v) for k, v in record.items()}


def _expected(collection: beir.Collection) -> dict[str, list[dict]]:
  return {
      "corpus": [{"id": i, **doc} for i, doc in collection.corpus.items()],
      "queries": [{"id": q, "text": text} for q, text in collection.queries.items()],
      "qrels": [{"query_id": q, "corpus_id": d, "score": grade}
                for q, judged in collection.qrels.items() for d, grade in judged.items()],
  }


def _check_round_trip(folder, name, data_dir):
  collection = beir.load_collection(folder)
  expected = _expected(collection)
  for part in tfds_beir.PARTS:
    split = "corpus" if part == "corpus" else "test"
    source = _source(data_dir, name, part, split)
    assert [_decoded(source[i]) for i in range(len(source))] == expected[part], part
    through_grain = grain.MapDataset.source(source).map(_decoded)
    assert list(through_grain) == expected[part], part
  return collection


def test_builds_and_reads_back_without_tensorflow(tmp_path, no_tensorflow):
  synthetic.write_limit_style(tmp_path / "limit")
  tfds_beir.prepare(tmp_path / "limit", "synthetic", tmp_path / "tfds")
  collection = _check_round_trip(tmp_path / "limit", "synthetic", tmp_path / "tfds")
  assert (len(collection.corpus), len(collection.queries)) == (46, 1000)
  files = sorted(p.name for p in (tmp_path / "tfds" / "beir_collection" / "synthetic-qrels" / "1.0.0").iterdir())
  assert files == ["beir_collection-test.array_record-00000-of-00001", "dataset_info.json", "features.json"]


def test_qrels_splits_and_grain_loader(tmp_path, no_tensorflow):
  folder = tmp_path / "small"
  (folder / "qrels").mkdir(parents=True)
  (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "é"}\n{"_id": "d2", "text": "b"}\n')
  (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"_id": "q2", "text": "y"}\n')
  (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t3\n")
  (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t0\nq2\td2\t1\n")
  tfds_beir.prepare(folder, "small", tmp_path / "tfds")
  qrels = tfds.data_source("beir_collection/small-qrels", data_dir=str(tmp_path / "tfds"))
  assert set(qrels) == {"dev", "train"}
  loader = grain.DataLoader(data_source=qrels["dev"], operations=[grain.transforms.Batch(2)],
                            sampler=grain.samplers.SequentialSampler(len(qrels["dev"]), grain.sharding.NoSharding()),
                            worker_count=0)
  (batch,) = list(loader)
  assert list(batch["corpus_id"]) == [b"d1", b"d2"] and list(batch["score"]) == [0, 1]
  queries = _source(tmp_path / "tfds", "small", "queries", "train")
  assert [_decoded(queries[i]) for i in range(len(queries))] == [{"id": "q1", "text": "x"}]
  corpus = _source(tmp_path / "tfds", "small", "corpus", "corpus")
  assert [_decoded(corpus[i]) for i in range(len(corpus))] == [{"id": "d1", "title": "T", "text": "é"},
                                                              {"id": "d2", "title": "", "text": "b"}]


def test_limit_small_round_trips(shared_data, tmp_path, no_tensorflow):
  tfds_beir.prepare(shared_data / "limit-small", "limit-small", tmp_path / "tfds")
  collection = _check_round_trip(shared_data / "limit-small", "limit-small", tmp_path / "tfds")
  assert (len(collection.corpus), len(collection.queries)) == (46, 1000)


def test_public_configs_name_the_download():
  names = {c.name for c in tfds_beir.BeirCollection.BUILDER_CONFIGS}
  assert {"scifact-corpus", "scifact-queries", "scifact-qrels", "trec-covid-qrels"} <= names
  assert all(c.folder is None for c in tfds_beir.BeirCollection.BUILDER_CONFIGS)
  assert tfds_beir.URL.format("scifact") == "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
