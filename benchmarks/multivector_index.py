"""Multi-vector search on SciFact: retrax's token index against exhaustive MaxSim, PyLate's PLAID
(with --plaid) and Voyager, PyLate's HNSW index (with --voyager).

  python benchmarks/multivector_index.py --model RUN_OR_FOLDER [--k-token 100 32] [--cache runs/colbert.npz]
                                         [--plaid 8:8192 4:1024] [--plaid-nbits 4] [--voyager]

The model's token vectors of the 5,183 SciFact documents and 300 test queries are encoded once
(read from --cache afterwards). For each index: build seconds, queries per second (after a
warm-up call), recall@10 against exhaustive MaxSim, the index's memory (its arrays), and
nDCG@10 on SciFact test. Voyager: one HNSW entry per document token (M 64, ef 200, cosine),
each query token's k′ neighbours' documents re-scored by the same exact MaxSim, as PyLate's
retrieve does. PLAID: PyLate 1.6's `indexes.PLAID` (fast-plaid, on the CPU) over the same
vectors, built once (--plaid-nbits), searched at each n_ivf_probe:n_full_scores of --plaid; it runs in its own
environment, since fast-plaid pins torch 2.11:
  python3 -m venv .venv-plaid && .venv-plaid/bin/pip install -r benchmarks/plaid-requirements.txt \
    && .venv-plaid/bin/pip install --no-deps pylate==1.6.0
Where PyLate's environment (.venv-pylate) exists, a last row has PyLate 1.6 encode the exported
model itself and score every document exhaustively (colbert_scores): the export's parity in nDCG@10.
"""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

import numpy as np

import retrax
from retrax.eval import beir, metrics
from retrax.index.multivector import MaxSimIndex
from retrax.index.token_index import TokenIndex

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYLATE = ROOT / ".venv-pylate" / "bin" / "python"
PLAID = ROOT / ".venv-plaid" / "bin" / "python"
SCIFACT = ROOT.parent / "shared" / "data" / "beir-scifact"


def encoded(model: str, cache: pathlib.Path | None):
  collection = beir.load_collection(SCIFACT, "test")
  doc_ids, qids = list(collection.corpus), list(collection.queries)
  if cache and cache.is_file():
    data = np.load(cache)
    split = lambda flat, lengths: np.split(flat, np.cumsum(lengths)[:-1])
    return (collection, doc_ids, qids, split(data["docs"], data["doc_lengths"]),
            split(data["queries"], data["query_lengths"]))
  retriever = retrax.load(model)
  docs = retriever.encode_documents([beir.document_text(collection.corpus[d]) for d in doc_ids], 32, True)
  queries = retriever.encode_queries([collection.queries[q] for q in qids], 32, True)
  if cache:
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, docs=np.concatenate(docs), doc_lengths=[len(d) for d in docs],
             queries=np.concatenate(queries), query_lengths=[len(q) for q in queries])
  return collection, doc_ids, qids, docs, queries


class VoyagerTokens:
  """PyLate's Voyager retrieve: HNSW over document tokens, candidates re-scored by exact MaxSim."""

  def __init__(self, docs, k_token):
    import voyager
    self.index = voyager.Index(voyager.Space.Cosine, num_dimensions=docs[0].shape[1], M=64, ef_construction=200)
    self.index.add_items(np.concatenate(docs))
    self.token_doc = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    self.exact, self.k_token = MaxSimIndex(docs), k_token
    self.docs = docs

  def search(self, queries, k):
    out = np.full((len(queries), k), -1), np.full((len(queries), k), -np.inf, np.float32)
    for row, q in enumerate(queries):
      tokens, _ = self.index.query(q, k=self.k_token, query_ef=200)
      found = np.unique(self.token_doc[tokens.ravel()])
      s = np.array([(q @ self.docs[i].T).max(1).sum() for i in found])
      top = np.argsort(-s, kind="stable")[:k]
      out[0][row, :len(top)], out[1][row, :len(top)] = found[top], s[top]
    return out


def pylate_exhaustive(model: str, collection, doc_ids, qids, k: int):
  """(ids, scores) [Q, k] of PyLate's exhaustive MaxSim over its own encoding of `model`'s PyLate export."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    retrax.load(model).save_pretrained(tmp / "export")
    request = {"load": str(tmp / "export"), "rank": {
        "queries": [collection.queries[q] for q in qids], "k": k,
        "documents": [beir.document_text(collection.corpus[d]) for d in doc_ids]}}
    (tmp / "request.json").write_text(json.dumps(request))
    subprocess.run([str(PYLATE), str(ROOT / "tests" / "pylate_reference.py"), str(tmp / "request.json"),
                    str(tmp / "out.npz")], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = np.load(tmp / "out.npz")
    return out["ids"], out["scores"]


def pylate_plaid(docs, queries, settings, nbits: int, k: int):
  """PyLate's PLAID over `docs` and `queries` in .venv-plaid (benchmarks/pylate_plaid.py): its output arrays."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    np.savez(tmp / "vectors.npz", documents=np.concatenate(docs), lengths=[len(d) for d in docs],
             queries=np.concatenate(queries), query_lengths=[len(q) for q in queries], k=k,
             nbits=nbits, settings=np.asarray(settings))
    subprocess.run([str(PLAID), str(ROOT / "benchmarks" / "pylate_plaid.py"), str(tmp / "vectors.npz"),
                    str(tmp / "out.npz")], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return dict(np.load(tmp / "out.npz"))


def memory_mb(index) -> str:
  """The arrays an index holds (ScaNN's and Voyager's own structures are not counted)."""
  if isinstance(index, MaxSimIndex):
    arrays = index._tiles.values()
  elif isinstance(index, TokenIndex):
    arrays = [index.vectors, *index.documents.values()]
  else:
    return "—"
  return f"{sum(np.asarray(a).nbytes for a in arrays) / 2 ** 20:.0f}"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", required=True)
  parser.add_argument("--k-token", type=int, nargs="+", default=[100, 32])
  parser.add_argument("--cache", type=pathlib.Path)
  parser.add_argument("--plaid", nargs="*", default=None, metavar="PROBES:FULL_SCORES",
                      help="add PyLate PLAID rows at these n_ivf_probe:n_full_scores (default 8:8192, "
                      "PyLate's); needs .venv-plaid")
  parser.add_argument("--plaid-nbits", type=int, default=4, help="PLAID's residual bits (PyLate's default: 4)")
  parser.add_argument("--voyager", action="store_true", help="add Voyager rows (its HNSW build over SciFact's "
                      "815k token vectors did not finish in 30 minutes on 2 cores)")
  args = parser.parse_args()
  if args.plaid is not None and not PLAID.is_file():
    parser.error(f"--plaid runs PyLate in {PLAID.parent.parent}, which is absent: build it as this file's docstring says")
  collection, doc_ids, qids, docs, queries = encoded(args.model, args.cache)
  print(f"{len(docs)} documents, {sum(map(len, docs))} token vectors of dimension {docs[0].shape[1]}; "
        f"{len(queries)} queries\n")
  builders = [("exhaustive MaxSim (retrax, JAX)", lambda: MaxSimIndex(docs))]
  builders += [(f"token index, ScaNN (retrax), k′ = {k}", lambda k=k: TokenIndex.build(docs, doc_ids, k_token=k))
               for k in args.k_token]
  if args.voyager:
    builders += [(f"Voyager HNSW tokens (PyLate's), k′ = {k}", lambda k=k: VoyagerTokens(docs, k))
                 for k in args.k_token]
  print("| index | build s | QPS | recall@10 vs exhaustive | memory MB | nDCG@10 |")
  print("|---|---|---|---|---|---|")
  reference = None

  def row(name, ids, scores, built, qps, memory):
    nonlocal reference
    reference = ids if reference is None else reference
    recall = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ids, reference)])
    run = {q: {doc_ids[i]: float(s) for i, s in zip(r, sr) if i >= 0} for q, r, sr in zip(qids, ids, scores)}
    ndcg = metrics.compute(collection.qrels, run, ["nDCG@10"])["nDCG@10"]
    print(f"| {name} | {built} | {qps} | {recall:.4f} | {memory} | {ndcg:.4f} |", flush=True)

  for name, build in builders:
    start = time.perf_counter()
    index = build()
    built = time.perf_counter() - start
    index.search(queries[:4], 10)
    start = time.perf_counter()
    ids, scores = index.search(queries, 100)
    row(name, ids, scores, f"{built:.1f}", f"{len(queries) / (time.perf_counter() - start):.1f}", memory_mb(index))
  if args.plaid is not None:
    settings = [tuple(map(int, s.split(":"))) for s in args.plaid or ["8:8192"]]
    plaid = pylate_plaid(docs, queries, settings, args.plaid_nbits, 100)
    for i, (probes, full_scores) in enumerate(settings):
      row(f"PLAID (PyLate 1.6, fast-plaid, CPU), {args.plaid_nbits} bits, n_ivf_probe = {probes}, "
          f"n_full_scores = {full_scores}",
          plaid[f"ids_{i}"], plaid[f"scores_{i}"], f"{plaid['build_s']:.1f}",
          f"{len(queries) / plaid[f'search_s_{i}']:.1f}", f"{plaid['index_mb']:.0f} (on disk)")
  if PYLATE.is_file():
    row("exhaustive MaxSim by PyLate 1.6 (its own encoding of the export)",
        *pylate_exhaustive(args.model, collection, doc_ids, qids, 100), "—", "—", "—")
  else:
    print(f"\n({PYLATE} is absent: no PyLate row)")


if __name__ == "__main__":
  main()
