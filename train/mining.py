"""Hard negatives mined with the model itself through its kind's index, saved as a candidates file.

For each training query: rank the corpus by the retriever's score (the kind's exact index), drop the
judged documents, skip the `skip_top` highest-ranked of the rest (likely unjudged positives),
keep the next `depth`. Written as the JSONL that examples.read_candidates reads.
"""
import json
import logging

from ..eval import beir
from ..files import as_path, write_atomic


def mine_negatives(retriever, collection: beir.Collection, path, *, depth: int, skip_top: int, batch_size: int,
                   show_progress: bool = False) -> None:
  doc_ids = list(collection.corpus)
  qids = [q for q in collection.qrels if q in collection.queries]
  logging.info("mining negatives: %d queries over %d documents", len(qids), len(doc_ids))
  docs = retriever.encode_documents([beir.document_text(collection.corpus[d]) for d in doc_ids], batch_size,
                                    show_progress)
  queries = retriever.encode_queries([collection.queries[q] for q in qids], batch_size, show_progress)
  most_judged = max(len(j) for j in collection.qrels.values())
  indices, _ = retriever.index(docs, doc_ids).search(queries, min(len(doc_ids), skip_top + depth + most_judged))
  lines = []
  for qid, row in zip(qids, indices):
    ranked = [doc_ids[i] for i in row if doc_ids[i] not in collection.qrels[qid]]
    lines.append(json.dumps({"qid": qid, "negatives": ranked[skip_top:skip_top + depth]}))
  as_path(path).parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, "".join(line + "\n" for line in lines))
