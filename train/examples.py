"""Training rows from a BEIR-format collection: a query, its positives, a pool of negatives.

Positives come from the split's qrels (grade > 0; the grade is the label). Negatives and
teacher scores come from an optional JSONL file, one object per line:

  {"qid": "q1", "negatives": ["d7", "d3", …], "scores": {"d1": 9.1, "d7": 4.2, …}}

(`scores` optional; when given, every candidate's label is its teacher score). A query's
positives are split into groups of `num_positives`, one row per group, so every positive
is seen once per epoch. Bad rows (no positive, an empty text, an unknown id, a candidate
without a teacher score) and judged positives missing from the corpus are counted by reason
and skipped, never silently.
"""
import collections
import dataclasses
import logging
import math

from ..files import as_path
from ..errors import InputError
from ..eval import beir


@dataclasses.dataclass(frozen=True)
class Row:
  qid: str
  positives: tuple[str, ...]
  negatives: tuple[str, ...]          # the pool that negatives are sampled from
  teacher: dict | None = None         # doc id → teacher score


@dataclasses.dataclass
class TrainingSet:
  collection: beir.Collection
  rows: list[Row]
  skipped: collections.Counter

  def summary(self) -> str:
    if not self.skipped:
      return f"{len(self.rows)} training rows, none skipped"
    reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
    return f"{len(self.rows)} training rows; skipped {sum(self.skipped.values())}: {reasons}"


def read_candidates(path) -> dict[str, dict]:
  """qid → {"negatives": [...], "scores": {...}} from a JSONL candidates file."""
  path = as_path(path)
  out = {}
  for line_no, obj in beir.json_objects(path):
    if not isinstance(obj.get("qid"), str):
      raise InputError(path, 'expected an object with a string "qid"', line=line_no)
    negatives, scores = obj.get("negatives", []), obj.get("scores")
    if not isinstance(negatives, list) or not all(isinstance(d, str) for d in negatives):
      raise InputError(path, '"negatives" must be a list of document ids', line=line_no)
    if scores is not None and not (isinstance(scores, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores.values())):
      raise InputError(path, '"scores" must map document ids to finite numbers', line=line_no)
    if obj["qid"] in out:
      raise InputError(path, f"duplicate qid {obj['qid']!r}", line=line_no)
    out[obj["qid"]] = {"negatives": negatives, "scores": scores}
  return out


def build(folder, split: str, candidates_file=None, num_positives: int = 1) -> TrainingSet:
  collection = beir.load_collection(folder, split=split)
  candidates = read_candidates(candidates_file) if candidates_file else {}
  skipped = collections.Counter(unknown_qid_in_candidates=len(set(candidates) - set(collection.queries)))
  rows = []
  for qid, judged in collection.qrels.items():
    positives = [d for d, grade in judged.items() if grade > 0 and d in collection.corpus]
    skipped["unknown_positive_id"] += sum(grade > 0 and d not in collection.corpus for d, grade in judged.items())
    entry = candidates.get(qid, {"negatives": [], "scores": None})
    known_negatives = [d for d in entry["negatives"] if d in collection.corpus and d not in judged]
    skipped["unknown_negative_id"] += sum(d not in collection.corpus for d in entry["negatives"])
    teacher = entry["scores"]
    if not positives:
      skipped["no_positive"] += 1
    elif not collection.queries.get(qid, "").strip():
      skipped["empty_query"] += 1
    elif any(not beir.document_text(collection.corpus[d]) for d in positives):
      skipped["empty_positive"] += 1
    elif teacher is not None and any(d not in teacher for d in positives + known_negatives):
      skipped["candidate_without_teacher_score"] += 1
    else:
      for start in range(0, len(positives), num_positives):
        rows.append(Row(qid, tuple(positives[start:start + num_positives]), tuple(known_negatives), teacher))
  skipped = collections.Counter({k: v for k, v in skipped.items() if v})
  result = TrainingSet(collection, rows, skipped)
  logging.info("%s", result.summary())
  if not rows:
    raise InputError(folder, f"no usable training rows in split {split!r}: {result.summary()}")
  return result
