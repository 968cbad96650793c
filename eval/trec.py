"""TREC qrels (`qid 0 docid grade`) and runs (`qid Q0 docid rank score tag`), read and written.

Columns are separated by whitespace, so an id that holds whitespace (LIMIT's document ids are
names such as "Geneva Durben") is written percent-escaped: `%` becomes `%25` and each
whitespace character the %XX of its UTF-8 bytes ("Geneva%20Durben"). The readers undo every
%XX, so ids round-trip exactly and "a b", "a_b" and "a%20b" stay three ids.
"""
import re
import urllib.parse

from ..errors import InputError
from ..files import write_atomic
from .beir import numbered_lines

NEEDS_ESCAPE = re.compile(r"[%\s]")


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


def _ids(path, lineno, *texts) -> list[str]:
  try:
    return [unescape(t) for t in texts]
  except UnicodeDecodeError:
    raise InputError(path, f"an id's %-escapes are not UTF-8: {texts}", line=lineno) from None


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
    _add(qrels, seen, *_ids(path, lineno, qid, docid), _number(grade, int, "an integer grade", path, lineno), path,
         lineno)
  return qrels


def read_run(path) -> dict[str, dict[str, float]]:
  """{qid: {docid: score}} from `qid Q0 docid rank score tag` lines; ranks are checked, then dropped."""
  run, seen = {}, {}
  for lineno, (qid, _, docid, rank, score, _) in _columns(path, 6, "qid Q0 docid rank score tag"):
    _number(rank, int, "an integer rank", path, lineno)
    _add(run, seen, *_ids(path, lineno, qid, docid), _number(score, float, "a number for the score", path, lineno),
         path, lineno)
  return run


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
  """Score descending, ties by docid descending (trec_eval's tie rule)."""
  return sorted(sorted(docs.items(), reverse=True), key=lambda item: item[1], reverse=True)


def escape(text: str) -> str:
  """`%` and whitespace as %XX (UTF-8); every other character as it is."""
  return NEEDS_ESCAPE.sub(lambda m: urllib.parse.quote(m.group(), safe=""), text)


def unescape(text: str) -> str:
  return urllib.parse.unquote(text, errors="strict") if "%" in text else text


def write_run(path, run: dict[str, dict[str, float]], tag: str = "retrax") -> None:
  """Writes `qid Q0 docid rank score tag`, ranks from 1 in trec_eval's order, scores in full precision,
  ids escaped as the module docstring says. The file appears whole or not at all."""
  if NEEDS_ESCAPE.search(tag) or not tag:
    raise InputError("tag", f"expected a non-empty run tag without whitespace or %, got {tag!r}")
  lines = []
  for qid, docs in run.items():
    for rank, (docid, score) in enumerate(ranked(docs), 1):
      lines.append(f"{escape(qid)} Q0 {escape(docid)} {rank} {float(score)!r} {tag}\n")
  write_atomic(path, "".join(lines))
