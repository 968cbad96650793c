"""BEIR/MTEB-format collections: corpus.jsonl, queries.jsonl and qrels, read and validated.

A folder holds `corpus.jsonl` (or `.jsonl.gz`) with `{"_id", "title"?, "text"}` per line,
`queries.jsonl` (or `.gz`) with `{"_id", "text"}`, and the judgments of a split in
`qrels/<split>.tsv` (BEIR: tab-separated, optional header `query-id corpus-id score`),
`qrels/<split>.jsonl`, or `qrels.jsonl` (LIMIT: one file, the test split) with
`{"query-id", "corpus-id", "score"}`. Files are UTF-8; a byte-order mark is dropped.

Judgments are kept as the file has them, as BEIR passes them to pytrec_eval: one naming a
document missing from the corpus still counts (it can never be retrieved, so it lowers
recall, AP and nDCG), and is counted and logged. Judgments naming a query missing from the
queries file cannot be evaluated; they are dropped, counted and logged. A collection with no
documents, no queries, no judgments, or no judged query that the queries file has, is an
InputError before anything is encoded.
"""
import dataclasses
import gzip
import json
import logging
import zlib

from etils import epath

from ..errors import InputError
from ..files import as_path

CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz")
QUERY_NAMES = ("queries.jsonl", "queries.jsonl.gz")
QRELS_COLUMNS = ("query-id", "corpus-id", "score")


@dataclasses.dataclass
class Collection:
  """One split of a collection (see the module docstring for judgments of unknown ids)."""
  corpus: dict[str, dict]             # doc id -> {"title": str, "text": str}
  queries: dict[str, str]             # the queries with judgments in the split
  qrels: dict[str, dict[str, int]]    # query id -> {doc id: grade}, unknown doc ids included
  unknown_documents: int              # judgments (kept) naming a doc id not in the corpus
  unknown_queries: int = 0            # judgments (dropped) naming a query id not in the queries file


def document_text(doc: dict) -> str:
  """`(title + " " + text).strip()`, BEIR's SentenceBERT convention; the text alone without a title."""
  return (doc.get("title", "") + " " + doc["text"]).strip()


def numbered_lines(path):
  """Yields (line number from 1, text) of a UTF-8 file, gunzipped when the name ends in .gz; skips
  blank lines and drops a byte-order mark."""
  path = as_path(path)
  try:
    with path.open("rb") as raw_file, (gzip.open(raw_file) if path.suffix == ".gz" else raw_file) as f:
      for lineno, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
          raise InputError(path, f"expected UTF-8 text ({e.reason})", line=lineno) from None
        if line.strip():
          yield lineno, line
  except FileNotFoundError:
    raise InputError(path, "no such file") from None
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise InputError(path, f"cannot read the file, truncated or corrupt ({e})") from None
  except OSError as e:
    raise InputError(path, f"cannot read the file ({e})") from None


def json_objects(path):
  """Yields (line number, dict) for a file with one JSON object per line."""
  for lineno, line in numbered_lines(path):
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise InputError(path, f"expected one JSON object per line ({e.msg}, column {e.colno})", line=lineno) from None
    if not isinstance(obj, dict):
      raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    yield lineno, obj


def _field(obj, key, path, lineno, kind=str, default=None):
  """obj[key], which must be a `kind`; `default` when the key is absent and a default is given."""
  if key not in obj:
    if default is not None:
      return default
    raise InputError(path, f"expected a {key!r} field", line=lineno)
  value = obj[key]
  if not isinstance(value, kind) or isinstance(value, bool):
    raise InputError(path, f"expected {key!r} to be {kind.__name__}, got {type(value).__name__}", line=lineno)
  return value


def _nonempty_id(value: str, what: str, path, lineno) -> str:
  if not value.strip():
    raise InputError(path, f"expected a non-empty {what}, got {value!r}", line=lineno)
  return value


def _check_new(seen: dict, key, what, path, lineno) -> None:
  """Records the line of `key` in `seen`; a key seen before is an InputError naming both lines."""
  if key in seen:
    raise InputError(path, f"duplicate {what} (first on line {seen[key]})", line=lineno)
  seen[key] = lineno


def read_corpus(path) -> dict[str, dict]:
  """{doc id: {"title": str, "text": str}} in file order; a missing title is ""."""
  corpus, seen = {}, {}
  for lineno, obj in json_objects(path):
    doc_id = _nonempty_id(_field(obj, "_id", path, lineno), "'_id'", path, lineno)
    _check_new(seen, doc_id, f"_id {doc_id!r}", path, lineno)
    corpus[doc_id] = {"title": _field(obj, "title", path, lineno, default=""),
                      "text": _field(obj, "text", path, lineno)}
  return corpus


def read_queries(path) -> dict[str, str]:
  """{query id: text} in file order."""
  queries, seen = {}, {}
  for lineno, obj in json_objects(path):
    qid = _nonempty_id(_field(obj, "_id", path, lineno), "'_id'", path, lineno)
    _check_new(seen, qid, f"_id {qid!r}", path, lineno)
    queries[qid] = _field(obj, "text", path, lineno)
  return queries


def _tsv_judgments(path):
  """Yields (line number, query id, doc id, grade); a first line that names the columns
  (`query-id corpus-id score`, any case, `_` for `-`) is the header."""
  for i, (lineno, line) in enumerate(numbered_lines(path)):
    cols = line.rstrip("\r\n").split("\t")
    if len(cols) != 3:
      raise InputError(path, f"expected 3 tab-separated columns {QRELS_COLUMNS}, got {len(cols)}", line=lineno)
    if i == 0 and tuple(c.strip().lower().replace("_", "-") for c in cols) == QRELS_COLUMNS:
      continue
    try:
      grade = int(cols[2])
    except ValueError:
      header = " (a header line must read query-id, corpus-id, score)" if i == 0 else ""
      raise InputError(path, f"expected an integer score, got {cols[2]!r}{header}", line=lineno) from None
    yield lineno, cols[0], cols[1], grade


def _jsonl_judgments(path):
  """Yields (line number, query id, doc id, grade) from `{"query-id", "corpus-id", "score"}` lines."""
  for lineno, obj in json_objects(path):
    qid, doc_id = (_field(obj, key, path, lineno) for key in QRELS_COLUMNS[:2])
    yield lineno, qid, doc_id, _field(obj, "score", path, lineno, kind=int)


def read_qrels(path) -> dict[str, dict[str, int]]:
  """{query id: {doc id: grade}} from a BEIR .tsv or a .jsonl qrels file; a repeated pair is an error."""
  path = as_path(path)
  judgments = _jsonl_judgments(path) if ".jsonl" in path.suffixes else _tsv_judgments(path)
  qrels, seen = {}, {}
  for lineno, qid, doc_id, grade in judgments:
    _nonempty_id(qid, "query id", path, lineno)
    _nonempty_id(doc_id, "document id", path, lineno)
    _check_new(seen, (qid, doc_id), f"judgment of {doc_id!r} for query {qid!r}", path, lineno)
    qrels.setdefault(qid, {})[doc_id] = grade
  grades = [grade for judged in qrels.values() for grade in judged.values()]
  if grades and max(grades) <= 0:
    logging.warning("%s: all %d judgments are graded 0 or below (not relevant), so every metric will be 0",
                    path, len(grades))
  return qrels


def _find(folder: epath.Path, names) -> epath.Path:
  for name in names:
    if (folder / name).is_file():
      return folder / name
  raise InputError(folder, f"expected {' or '.join(names)} in the folder")


def _qrels_names(split: str) -> tuple[str, ...]:
  """The files that may hold the judgments of `split`, in the order they are looked for."""
  return (f"qrels/{split}.tsv", f"qrels/{split}.jsonl") + (("qrels.jsonl",) if split == "test" else ())


def splits(folder) -> list[str]:
  """The splits that have judgments in `folder`, sorted."""
  folder = as_path(folder)
  found = {p.stem for p in folder.glob("qrels/*") if p.suffix in (".tsv", ".jsonl")}
  return sorted(found | ({"test"} if (folder / "qrels.jsonl").is_file() else set()))


def load_corpus(folder) -> dict[str, dict]:
  """The corpus of a BEIR-format folder (see read_corpus)."""
  return read_corpus(_find(as_path(folder), CORPUS_NAMES))


def _known_queries(qrels, queries, corpus, path):
  """(qrels of the queries in `queries`, judgments dropped for other queries, kept judgments of unknown docs)."""
  kept = {qid: judged for qid, judged in qrels.items() if qid in queries}
  unknown_queries = sum(len(judged) for qid, judged in qrels.items() if qid not in queries)
  unknown_documents = sum(doc_id not in corpus for judged in kept.values() for doc_id in judged)
  if unknown_queries:
    logging.warning("%s: dropped %d judgments naming queries not in the queries file", path, unknown_queries)
  if unknown_documents:
    logging.warning("%s: %d judgments name documents not in the corpus; they count as relevant documents "
                    "that are never retrieved (as in pytrec_eval and BEIR)", path, unknown_documents)
  return kept, unknown_queries, unknown_documents


def _nonempty(table: dict, path, what: str) -> dict:
  if not table:
    raise InputError(path, f"holds no {what}")
  return table


def load_collection(folder, split="test") -> Collection:
  """The corpus, the queries judged in `split` (file order, as BEIR's loader keeps) and their qrels."""
  folder = as_path(folder)
  if not folder.is_dir():
    raise InputError(folder, "expected a folder with corpus.jsonl, queries.jsonl and qrels")
  corpus_path, queries_path = _find(folder, CORPUS_NAMES), _find(folder, QUERY_NAMES)
  corpus = _nonempty(read_corpus(corpus_path), corpus_path, "documents")
  queries = _nonempty(read_queries(queries_path), queries_path, "queries")
  qrels_path = _find(folder, _qrels_names(split))
  all_qrels = _nonempty(read_qrels(qrels_path), qrels_path, "judgments")
  qrels, unknown_queries, unknown_documents = _known_queries(all_qrels, queries, corpus, qrels_path)
  if not qrels:
    raise InputError(qrels_path, f"none of its {len(all_qrels)} judged queries is in {queries_path} "
                                 f"(for example {next(iter(all_qrels))!r})")
  judged = {qid: text for qid, text in queries.items() if qid in qrels}
  return Collection(corpus, judged, qrels, unknown_documents, unknown_queries)
