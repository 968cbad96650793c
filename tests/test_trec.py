"""TREC qrels and runs: exact values, trec_eval's ranking order, atomic writes, file:line errors."""
import logging
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


def test_write_run_replaces_whitespace_in_ids(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    trec.write_run(tmp_path / "run.trec", {"query 1": {"Geneva Durben": 1.0, "plain": 0.5}})
  assert (tmp_path / "run.trec").read_text() == "query_1 Q0 Geneva_Durben 1 1.0 retrax\nquery_1 Q0 plain 2 0.5 retrax\n"
  assert "2 ids hold whitespace" in caplog.text


@pytest.mark.parametrize("reader, text, line, expected", [
    (trec.read_qrels, "1 0 d1 1\n1 0 d2\n", 2, "expected 4 columns `qid 0 docid grade`, got 3"),
    (trec.read_qrels, "1 0 d1 yes\n", 1, "expected an integer grade, got 'yes'"),
    (trec.read_qrels, "1 0 d1 1\n2 0 d1 1\n1 0 d1 0\n", 3, "duplicate document 'd1' for query '1' (first on line 1)"),
    (trec.read_run, "q1 Q0 d1 1 0.5\n", 1, "expected 6 columns `qid Q0 docid rank score tag`, got 5"),
    (trec.read_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n", 2, "expected a number for the score, got 'high'"),
    (trec.read_run, "q1 Q0 d1 first 0.5 t\n", 1, "expected an integer rank, got 'first'"),
    (trec.read_run, "q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", 2, "duplicate document 'd1' for query 'q1' (first on line 1)"),
])
def test_bad_line_names_file_and_line(tmp_path, reader, text, line, expected):
  path = tmp_path / "file.txt"
  path.write_text(text)
  with pytest.raises(InputError, match=re.escape(f"{path}:{line}: {expected}")):
    reader(path)


def test_missing_file_is_an_input_error(tmp_path):
  with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'absent'}: cannot read the file")):
    trec.read_run(tmp_path / "absent")
