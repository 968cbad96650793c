"""TREC qrels and runs: exact values, trec_eval's ranking order, atomic writes, file:line errors."""
import re

import pytest

from retrax.errors import InputError
from retrax.eval import trec


def test_read_qrels(tmp_path):
  path = tmp_path / "qrels.txt"
  path.write_text("1 0 d9 2\n1 0 d10 0\n\n2  Q0\td3 -1\n")
  assert trec.read_qrels(path) == {"1": {"d9": 2, "d10": 0}, "2": {"d3": -1}}


def test_read_run(tmp_path):
  path = tmp_path / "run.txt"
  path.write_text("q1 Q0 d1 1 2.5 bm25\nq1 Q0 d2 2 -1e-3 bm25\nq2 Q0 d1 1 7 bm25\n")
  assert trec.read_run(path) == {"q1": {"d1": 2.5, "d2": -0.001}, "q2": {"d1": 7.0}}


def test_write_run_ranks_by_score_then_docid_descending(tmp_path):
  path = tmp_path / "run.trec"
  trec.write_run(path, {"q2": {"a": 0.5, "d9": 1.0, "d10": 1.0, "z": 0.25}, "q1": {"x": 0.1}}, tag="t")
  assert path.read_text() == (
      "q2 Q0 d9 1 1.0 t\n"
      "q2 Q0 d10 2 1.0 t\n"
      "q2 Q0 a 3 0.5 t\n"
      "q2 Q0 z 4 0.25 t\n"
      "q1 Q0 x 1 0.1 t\n")
  assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_write_then_read_is_exact(tmp_path):
  run = {"q1": {"d1": 0.1 + 0.2, "d2": 1 / 3, "d3": -2.5e-300}, "q2": {"d1": 123456789.123456789}}
  trec.write_run(tmp_path / "run.trec", run)
  assert trec.read_run(tmp_path / "run.trec") == run


def test_ids_with_whitespace_are_escaped_reversibly_and_never_collide(tmp_path):
  ids = ["Geneva Durben", "Geneva_Durben", "Geneva%20Durben", "tab\there", "nbsp\u00a0x", "100%", "plain"]
  run = {"query 1": {d: float(i) for i, d in enumerate(ids)}, "query_1": {"plain": 2.0}}
  trec.write_run(tmp_path / "run.trec", run)
  lines = (tmp_path / "run.trec").read_text().splitlines()
  assert lines[0] == "query%201 Q0 plain 1 6.0 retrax"
  assert "query%201 Q0 Geneva%20Durben 7 0.0 retrax" in lines and "query%201 Q0 Geneva%2520Durben 5 2.0 retrax" in lines
  assert all(len(line.split()) == 6 for line in lines)
  assert trec.read_run(tmp_path / "run.trec") == run
  (tmp_path / "qrels.txt").write_text("query%201 0 Geneva%20Durben 1\nquery_1 0 Geneva_Durben 2\n")
  assert trec.read_qrels(tmp_path / "qrels.txt") == {"query 1": {"Geneva Durben": 1}, "query_1": {"Geneva_Durben": 2}}


def test_a_tag_with_whitespace_is_refused(tmp_path):
  with pytest.raises(InputError, match="tag: expected a non-empty run tag"):
    trec.write_run(tmp_path / "run.trec", {"q": {"d": 1.0}}, tag="my run")
  assert not (tmp_path / "run.trec").exists()


@pytest.mark.parametrize("reader, text, line, expected", [
    (trec.read_qrels, "1 0 d1 1\n1 0 d2\n", 2, "expected 4 columns `qid 0 docid grade`, got 3"),
    (trec.read_qrels, "1 0 d1 yes\n", 1, "expected an integer grade, got 'yes'"),
    (trec.read_qrels, "1 0 d1 1\n2 0 d1 1\n1 0 d1 0\n", 3, "duplicate document 'd1' for query '1' (first on line 1)"),
    (trec.read_run, "q1 Q0 d1 1 0.5\n", 1, "expected 6 columns `qid Q0 docid rank score tag`, got 5"),
    (trec.read_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", 2, "expected a number for the score, got 'high'"),
    (trec.read_run, "q1 Q0 d1 first 0.5 t\n", 1, "expected an integer rank, got 'first'"),
    (trec.read_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", 2, "duplicate document 'd1' for query 'q1' (first on line 1)"),
    (trec.read_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d%FF 2 0.4 t\n", 2, "an id's %-escapes are not UTF-8"),
])
def test_bad_line_names_file_and_line(tmp_path, reader, text, line, expected):
  path = tmp_path / "file.txt"
  path.write_text(text)
  with pytest.raises(InputError, match=re.escape(f"{path}:{line}: {expected}")):
    reader(path)


def test_missing_file_is_an_input_error(tmp_path):
  with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'absent'}: no such file")):
    trec.read_run(tmp_path / "absent")
