"""BEIR/MTEB readers and the LIMIT-style generator: values, file:line errors, the real collections."""
import collections
import gzip
import json
import logging
import pathlib
import re
import zlib

import pytest

from retrax.errors import InputError
from retrax.eval import beir, synthetic

HEADER = "query-id\tcorpus-id\tscore\n"


def _jsonl(rows) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def _write(folder: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for name, text in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
  return folder


def _small(folder, **replace):
  """A valid three-document collection; `replace` swaps whole files."""
  files = {
      "corpus.jsonl": _jsonl([{"_id": "d1", "title": "Cells", "text": "divide  "},
                              {"_id": "d2", "text": " no title "},
                              {"_id": "d3", "title": "", "text": "Zürich"}]),
      "queries.jsonl": _jsonl([{"_id": "q1", "text": "what divides?"}, {"_id": "q2", "text": "unjudged"},
                               {"_id": "q3", "text": "where?", "metadata": {}}]),
      "qrels/test.tsv": HEADER + "q3\td3\t2\nq1\td1\t1\nq1\td2\t0\n",
  }
  files.update(replace)
  return _write(folder, {k: v for k, v in files.items() if v is not None})


def test_reads_corpus_queries_and_qrels(tmp_path):
  c = beir.load_collection(_small(tmp_path))
  assert c.corpus == {"d1": {"title": "Cells", "text": "divide  "}, "d2": {"title": "", "text": " no title "},
                      "d3": {"title": "", "text": "Zürich"}}
  assert c.queries == {"q1": "what divides?", "q3": "where?"}  # q2 has no judgments in the split
  assert list(c.queries) == ["q1", "q3"]
  assert c.qrels == {"q3": {"d3": 2}, "q1": {"d1": 1, "d2": 0}}
  assert (c.unknown_documents, c.unknown_queries) == (0, 0)


def test_document_text_joins_title_and_text():
  assert beir.document_text({"title": "Cells", "text": "divide  "}) == "Cells divide"
  assert beir.document_text({"title": "", "text": " no title "}) == "no title"
  assert beir.document_text({"text": " bare\n"}) == "bare"


def test_gzipped_corpus_and_queries(tmp_path):
  folder = _small(tmp_path)
  for name in ("corpus.jsonl", "queries.jsonl"):
    (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
    (folder / name).unlink()
  c = beir.load_collection(folder)
  assert c.corpus["d3"] == {"title": "", "text": "Zürich"} and c.queries["q3"] == "where?"


def test_headerless_tsv_keeps_first_line(tmp_path):
  c = beir.load_collection(_small(tmp_path, **{"qrels/test.tsv": "q1\td1\t3\n"}))
  assert c.qrels == {"q1": {"d1": 3}}


def test_jsonl_qrels_limit_and_split_forms(tmp_path):
  rows = _jsonl([{"query-id": "q1", "corpus-id": "d2", "score": 1}, {"query-id": "q2", "corpus-id": "d1", "score": 0}])
  c = beir.load_collection(_small(tmp_path / "a", **{"qrels/test.tsv": None, "qrels.jsonl": rows}))
  assert c.qrels == {"q1": {"d2": 1}, "q2": {"d1": 0}}
  c = beir.load_collection(_small(tmp_path / "b", **{"qrels/dev.jsonl": rows}), split="dev")
  assert c.qrels == {"q1": {"d2": 1}, "q2": {"d1": 0}}
  assert beir.splits(tmp_path / "a") == ["test"] and beir.splits(tmp_path / "b") == ["dev", "test"]


def test_qrels_without_a_relevant_judgment_say_why_every_metric_is_zero(tmp_path, caplog):
  folder = _small(tmp_path, **{"qrels/test.tsv": HEADER + "q1\td1\t0\nq2\td2\t0\n"})
  with caplog.at_level(logging.WARNING):
    beir.load_collection(folder)
  assert (f"{folder / 'qrels' / 'test.tsv'}: all 2 judgments are graded 0 or below (not relevant), "
          "so every metric will be 0") in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    beir.load_collection(_small(tmp_path / "b", **{"qrels/test.tsv": HEADER + "q1\td1\t1\nq2\td2\t0\n"}))
  assert "not relevant" not in caplog.text


def test_unknown_documents_are_kept_and_unknown_queries_dropped_counted_and_logged(tmp_path, caplog):
  """Judgments of documents missing from the corpus stay (pytrec_eval counts them, as BEIR passes
  its qrels whole); judgments of queries missing from the queries file cannot be evaluated."""
  qrels = HEADER + "q1\td1\t1\nq1\tgone\t1\nq3\tgone2\t1\nq3\td3\t1\nq9\td1\t1\nq2\tgone\t2\n"
  folder = _small(tmp_path, **{"qrels/test.tsv": qrels})
  with caplog.at_level(logging.WARNING):
    c = beir.load_collection(folder)
  assert c.qrels == {"q1": {"d1": 1, "gone": 1}, "q3": {"gone2": 1, "d3": 1}, "q2": {"gone": 2}}
  assert c.queries == {"q1": "what divides?", "q2": "unjudged", "q3": "where?"}
  assert (c.unknown_documents, c.unknown_queries) == (3, 1)
  path = folder / "qrels" / "test.tsv"
  assert f"{path}: 3 judgments name documents not in the corpus; they count" in caplog.text
  assert f"{path}: dropped 1 judgments naming queries not in the queries file" in caplog.text


def test_byte_order_marks_are_dropped(tmp_path):
  bom = "\ufeff"
  folder = _small(tmp_path, **{"qrels/test.tsv": bom + "q1\td1\t1\n",
                               "queries.jsonl": bom + _jsonl([{"_id": "q1", "text": "what divides?"}]),
                               "corpus.jsonl": bom + _jsonl([{"_id": "d1", "text": "divide"}])})
  c = beir.load_collection(folder)
  assert c.qrels == {"q1": {"d1": 1}} and c.queries == {"q1": "what divides?"} and list(c.corpus) == ["d1"]
  c = beir.load_collection(_small(tmp_path / "b", **{"qrels/test.tsv": bom + HEADER + "q1\td1\t1\n"}))
  assert c.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "query_id\tcorpus_id\tscore", "Query-ID\tCorpus-ID\tScore"])
def test_a_header_is_a_first_line_naming_the_columns(tmp_path, header):
  c = beir.load_collection(_small(tmp_path, **{"qrels/test.tsv": f"{header}\nq1\td1\t1\n"}))
  assert c.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize("first", ["q1\td1\t1.5", "q1\td1\trelevant", "qid\tdocid\trel"])
def test_headerless_first_row_with_a_bad_score_is_an_error(tmp_path, first):
  folder = _small(tmp_path, **{"qrels/test.tsv": f"{first}\nq3\td3\t1\n"})
  with pytest.raises(InputError) as e:
    beir.load_collection(folder)
  assert str(e.value).startswith(f"{folder / 'qrels' / 'test.tsv'}:1: expected an integer score")


@pytest.mark.parametrize("name, text, expected", [
    ("corpus.jsonl", "", "corpus.jsonl: holds no documents"),
    ("queries.jsonl", "\n\n", "queries.jsonl: holds no queries"),
    ("qrels/test.tsv", HEADER, "test.tsv: holds no judgments"),
    ("qrels/test.tsv", HEADER + "x1\td1\t1\nx2\td2\t1\n", "test.tsv: none of its 2 judged queries is in"),
])
def test_empty_inputs_are_one_error_naming_the_file(tmp_path, name, text, expected):
  with pytest.raises(InputError, match=re.escape(expected)):
    beir.load_collection(_small(tmp_path, **{name: text}))


BAD_FILES = [
    ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', 2, "expected one JSON object per line"),
    ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n\n["d2"]\n', 3, "expected a JSON object, got list"),
    ("corpus.jsonl", '{"text": "no id"}\n', 1, "expected a '_id' field"),
    ("corpus.jsonl", '{"_id": "d1"}\n', 1, "expected a 'text' field"),
    ("corpus.jsonl", '{"_id": 7, "text": "x"}\n', 1, "expected '_id' to be str, got int"),
    ("corpus.jsonl", '{"_id": "d1", "title": null, "text": "x"}\n', 1, "expected 'title' to be str, got NoneType"),
    ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', 2,
     "duplicate _id 'd1' (first on line 1)"),
    ("queries.jsonl", '{"_id": "q1", "text": ["x"]}\n', 1, "expected 'text' to be str, got list"),
    ("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', 2,
     "duplicate _id 'q1' (first on line 1)"),
    ("qrels/test.tsv", HEADER + "q1\td1\n", 2, "expected 3 tab-separated columns"),
    ("qrels/test.tsv", HEADER + "q1\td1\t1\nq1\td2\t1.5\n", 3, "expected an integer score, got '1.5'"),
    ("qrels/test.tsv", HEADER + "q1\td1\t1\nq1\td1\t2\n", 3, "duplicate judgment of 'd1' for query 'q1' (first on line 2)"),
    ("qrels.jsonl", '{"query-id": "q1", "corpus-id": "d1", "score": "1"}\n', 1, "expected 'score' to be int, got str"),
    ("qrels.jsonl", '{"query-id": "q1", "score": 1}\n', 1, "expected a 'corpus-id' field"),
    ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": " ", "text": "b"}\n', 2, "expected a non-empty '_id', got ' '"),
    ("queries.jsonl", '{"_id": "", "text": "a"}\n', 1, "expected a non-empty '_id', got ''"),
    ("qrels/test.tsv", HEADER + "q1\t\t1\n", 2, "expected a non-empty document id, got ''"),
]


@pytest.mark.parametrize("name, text, line, expected", BAD_FILES)
def test_bad_line_names_file_line_and_expectation(tmp_path, name, text, line, expected):
  replace = {name: text} | ({"qrels/test.tsv": None} if name == "qrels.jsonl" else {})
  folder = _small(tmp_path, **replace)
  with pytest.raises(InputError) as e:
    beir.load_collection(folder)
  assert str(e.value).startswith(f"{folder / name}:{line}: {expected}")
  assert e.value.line == line


def test_missing_files_name_folder_and_candidates(tmp_path):
  folder = _small(tmp_path, **{"queries.jsonl": None})
  with pytest.raises(InputError, match=re.escape(f"{folder}: expected queries.jsonl or queries.jsonl.gz")):
    beir.load_collection(folder)
  folder = _small(tmp_path / "b")
  with pytest.raises(InputError, match=re.escape(f"{folder}: expected qrels/train.tsv or qrels/train.jsonl in")):
    beir.load_collection(folder, split="train")
  with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nowhere'}: expected a folder")):
    beir.load_collection(tmp_path / "nowhere")


def test_corrupt_gzip_is_an_input_error(tmp_path):
  folder = _small(tmp_path, **{"corpus.jsonl": None})
  (folder / "corpus.jsonl.gz").write_bytes(b"not gzip at all")
  with pytest.raises(InputError, match=re.escape(f"{folder / 'corpus.jsonl.gz'}: cannot read the file")):
    beir.load_collection(folder)


def test_corrupt_gzip_stream_is_an_input_error(tmp_path):
  """A valid gzip header over a damaged deflate stream raises zlib.error, not OSError."""
  folder = _small(tmp_path, **{"corpus.jsonl": None})
  rows = _jsonl({"_id": f"d{i}", "text": f"document number {i} " * 20} for i in range(200))
  data = bytearray(gzip.compress(rows.encode()))
  data[20:84] = b"\xff" * 64                    # the deflate block header: "invalid bit length repeat"
  (folder / "corpus.jsonl.gz").write_bytes(bytes(data))
  with pytest.raises(zlib.error):
    list(gzip.open(folder / "corpus.jsonl.gz"))
  with pytest.raises(InputError, match=re.escape(f"{folder / 'corpus.jsonl.gz'}: cannot read the file")):
    beir.load_collection(folder)


def test_invalid_utf8_names_the_line(tmp_path):
  folder = _small(tmp_path)
  (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "a"}\n{"_id": "q3", "text": "\xff"}\n')
  with pytest.raises(InputError, match=re.escape(f"{folder / 'queries.jsonl'}:2: expected UTF-8 text")):
    beir.load_collection(folder)


@pytest.mark.parametrize("name, split, docs, queries, judgments, grades", [
    ("beir-scifact", "test", 5183, 300, 339, {1: 339}),
    ("beir-scifact", "train", 5183, 809, 919, {1: 919}),
    ("limit-small", "test", 46, 1000, 2000, {1: 2000}),
    ("cranfield", "test", 1400, 225, 1612, {1: 363, 2: 734, 3: 387, 4: 128}),
])
def test_real_collections_load_with_documented_counts(shared_data, name, split, docs, queries, judgments, grades):
  c = beir.load_collection(shared_data / name, split=split)
  assert (len(c.corpus), len(c.queries), c.unknown_documents, c.unknown_queries) == (docs, queries, 0, 0)
  assert sum(len(j) for j in c.qrels.values()) == judgments
  assert collections.Counter(g for j in c.qrels.values() for g in j.values()) == grades
  assert set(c.queries) == set(c.qrels)


def test_real_collection_texts(shared_data):
  limit = beir.load_collection(shared_data / "limit-small")
  assert limit.queries["query_0"] == "Who likes Joshua Trees?"
  assert set(limit.qrels["query_0"]) == {"Geneva Durben", "Dorathea Bastress"}
  assert beir.document_text(limit.corpus["Geneva Durben"]).startswith("Geneva Durben likes Quokkas, River Otters,")
  scifact = beir.load_collection(shared_data / "beir-scifact")
  assert beir.document_text(scifact.corpus["4983"]).startswith(
      "Microstructural development of human newborn cerebral white matter assessed in vivo by diffusion tensor "
      "magnetic resonance imaging. Alterations of the architecture")
  assert scifact.qrels["1"] == {"31715818": 1}


def _likes(text: str) -> tuple[str, list[str]]:
  match = re.fullmatch(r"(\w+ \w+) likes (.+)\.", text)
  assert match, text
  head, _, last = match[2].rpartition(" and ")
  return match[1], (head.split(", ") if head else []) + [last]


def test_synthetic_collection_is_limit_shaped(tmp_path):
  synthetic.write_limit_style(tmp_path / "limit")
  c = beir.load_collection(tmp_path / "limit")
  assert (len(c.corpus), len(c.queries)) == (46, 1000)
  likes = {doc_id: _likes(doc["text"]) for doc_id, doc in c.corpus.items()}
  assert len({name for name, _ in likes.values()}) == 46
  assert min(len(a) for _, a in likes.values()) >= 35 and sum(len(a) for _, a in likes.values()) == 2000
  pairs = set()
  for qid, text in c.queries.items():
    attribute = re.fullmatch(r"Who likes (.+)\?", text)[1]
    assert c.qrels[qid] == {d: 1 for d, (_, a) in likes.items() if attribute in a}
    assert len(c.qrels[qid]) == 2
    pairs.add(frozenset(c.qrels[qid]))
  assert len(pairs) == 1000  # a distinct pair of people per query


def test_synthetic_is_deterministic_in_the_seed(tmp_path):
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    synthetic.write_limit_style(tmp_path / name, num_people=7, num_attributes=9, seed=seed)
  files = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
  read = {name: [(tmp_path / name / f).read_text() for f in files] for name in "abc"}
  assert read["a"] == read["b"] and read["a"] != read["c"]
  c = beir.load_collection(tmp_path / "a")
  assert len(c.corpus) == 7 and len(c.queries) == 9
  assert all(len(_likes(d["text"])[1]) >= 1 for d in c.corpus.values())


def test_synthetic_interrupted_write_leaves_no_folder(tmp_path, monkeypatch):
  calls = []

  def fail_second(self, text, *args, **kwargs):
    calls.append(self)
    if len(calls) == 2:
      raise OSError("disk full")
    return original(self, text, *args, **kwargs)

  from retrax.files import as_path
  path_type = type(as_path(tmp_path))  # the epath class retrax writes local files through
  original = path_type.write_text
  monkeypatch.setattr(path_type, "write_text", fail_second)
  with pytest.raises(OSError, match="disk full"):
    synthetic.write_limit_style(tmp_path / "limit")
  assert not (tmp_path / "limit").exists()
  monkeypatch.setattr(path_type, "write_text", original)
  synthetic.write_limit_style(tmp_path / "limit")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["limit"]
  with pytest.raises(FileExistsError):
    synthetic.write_limit_style(tmp_path / "limit")


@pytest.mark.parametrize("people, attributes", [(1, 1), (46, 1036), (10, 4)])
def test_synthetic_rejects_impossible_sizes(tmp_path, people, attributes):
  with pytest.raises(ValueError, match="expected 2 <= num_people"):
    synthetic.write_limit_style(tmp_path / "x", num_people=people, num_attributes=attributes)
  assert not any(tmp_path.iterdir())
