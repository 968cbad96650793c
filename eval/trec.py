"""TREC qrels (`qid 0 docid grade`) and runs (`qid Q0 docid rank score tag`), read and written."""
import logging
import re

from ..errors import InputError
from ..files import write_atomic
from .beir import numbered_lines

WHITESPACE = re.compile(r"\s+")


def _columns(path, count, layout):
  """Yields (line number, columns) for whitespace-separated lines of exactly `count` columns."""
  for lineno, line in numbered_lines(path):
    cols = line.split()
    if len(cols) != count:
      raise InputError(path, f"expected {count} columns `{layout}`, got {len(cols)}", line=lineno)
    yield lineno, cols


def _number(text, kind, what, path, lineno):
  try:
    return kind(text)
  except ValueError:
    raise InputError(path, f"expected {what}, got {text!r}", line=lineno) from None


def _add(table, seen, qid, docid, value, path, lineno):
  """table[qid][docid] = value; a pair seen before is an InputError naming both lines."""
  if (qid, docid) in seen:
    raise InputError(path, f"duplicate document {docid!r} for query {qid!r} (first on line {seen[qid, docid]})",
                     line=lineno)
  seen[qid, docid] = lineno
  table.setdefault(qid, {})[docid] = value


def read_qrels(path) -> dict[str, dict[str, int]]:
  """{qid: {docid: grade}} from `qid iteration docid grade` lines; the iteration column is ignored."""
  qrels, seen = {}, {}
  for lineno, (qid, _, docid, grade) in _columns(path, 4, "qid 0 docid grade"):
    _add(qrels, seen, qid, docid, _number(grade, int, "an integer grade", path, lineno), path, lineno)
  return qrels


def read_run(path) -> dict[str, dict[str, float]]:
  """{qid: {docid: score}} from `qid Q0 docid rank score tag` lines; ranks are checked, then dropped."""
  run, seen = {}, {}
  for lineno, (qid, _, docid, rank, score, _) in _columns(path, 6, "qid Q0 docid rank score tag"):
    _number(rank, int, "an integer rank", path, lineno)
    _add(run, seen, qid, docid, _number(score, float, "a number for the score", path, lineno), path, lineno)
  return run


def _ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
  """Score descending, ties by docid descending (trec_eval's tie rule)."""
  return sorted(sorted(docs.items(), reverse=True), key=lambda item: item[1], reverse=True)


def _token(text: str) -> str:
  return WHITESPACE.sub("_", text)


def write_run(path, run: dict[str, dict[str, float]], tag: str = "retrax") -> None:
  """Writes `qid Q0 docid rank score tag`, ranks from 1 in trec_eval's order, scores in full precision.

  Columns are whitespace-separated, so whitespace inside an id is written as `_` (LIMIT's
  document ids are names such as "Geneva Durben"), with a warning. The file appears whole or not at all.
  """
  lines, renamed = [], set()
  for qid, docs in run.items():
    for rank, (docid, score) in enumerate(_ranked(docs), 1):
      ids = (_token(qid), _token(docid))
      renamed.update(new for old, new in zip((qid, docid), ids) if old != new)
      lines.append(f"{ids[0]} Q0 {ids[1]} {rank} {float(score)!r} {tag}\n")
  if renamed:
    logging.warning("%s: %d ids hold whitespace, written with '_' instead", path, len(renamed))
  write_atomic(path, "".join(lines))
