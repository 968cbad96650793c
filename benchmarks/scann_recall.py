"""ScaNN recall@10 and QPS against exact search (retrax's JAX ExactIndex) and faiss IndexFlatIP.

  python benchmarks/scann_recall.py [--copies 40] [--query-copies 9] [--noise 0.5] [--k 10]
                                    [--cache runs/scifact-minilm.npz]

The vectors are real-like: all-MiniLM-L6-v2 embeddings of the 5,183 SciFact documents
(encoded once, ~4 minutes on a 2-core CPU, then read from --cache), each followed by --copies
perturbed copies x' = normalise(x + σ·g/√d), g ~ N(0, I), σ = --noise (so ‖x' − x‖ ≈ σ before
normalising); 41 × 5,183 = 212,503 vectors by default. The queries are the SciFact test
queries, each with --query-copies perturbed copies. Prints one markdown row per method:
build seconds, queries per second (after a warm-up call), recall@k against exact search.
"""
import argparse
import pathlib
import sys
import time

import numpy as np

import retrax
from retrax.eval import beir
from retrax.index.exact import ExactIndex
from retrax.index.scann_index import MODES, ScannIndex
from retrax.models.wheel import minilm_path

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "beir-scifact"


def embeddings(cache: pathlib.Path):
  """(documents, queries) encoded by all-MiniLM-L6-v2, cached in `cache` keyed by the model fingerprint."""
  model = retrax.load(minilm_path())
  if cache.is_file():
    stored = np.load(cache)
    if str(stored["fingerprint"]) == model.fingerprint():
      return stored["documents"], stored["queries"]
  collection = beir.load_collection(SCIFACT, split="test")
  docs = [beir.document_text(d) for d in collection.corpus.values()]
  queries = list(collection.queries.values())
  print(f"encoding {len(docs)} documents and {len(queries)} queries (cached at {cache})", file=sys.stderr)
  doc_emb = model.encode_documents(docs, batch_size=32, show_progress_bar=True)
  query_emb = model.encode_queries(queries, batch_size=32)
  cache.parent.mkdir(parents=True, exist_ok=True)
  np.savez(cache, documents=doc_emb, queries=query_emb, fingerprint=model.fingerprint())
  return doc_emb, query_emb


def with_copies(x, copies, noise, rng):
  """[n, d] → [n·(copies + 1), d]: each row, then `copies` rows normalise(x + noise·g/√d)."""
  g = rng.standard_normal((len(x), copies, x.shape[1]), dtype=np.float32) * (noise / np.sqrt(x.shape[1]))
  out = x[:, None, :] + g
  out /= np.linalg.norm(out, axis=-1, keepdims=True)
  return np.concatenate([x[:, None, :], out], axis=1).reshape(-1, x.shape[1])


def timed(build, queries, k):
  """(build seconds, QPS, indices, settings): QPS over all queries after a warm-up on the first 128."""
  start = time.perf_counter()
  search, settings = build()
  build_s = time.perf_counter() - start
  search(queries[:128], k)
  start = time.perf_counter()
  indices = search(queries, k)
  return build_s, len(queries) / (time.perf_counter() - start), indices, settings


def recall(found, exact):
  """Mean over queries of |found ∩ exact| / k."""
  return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def exact_jax(x):
  index = ExactIndex(x)
  return lambda q, k: index.search(q, k)[0], ""


def faiss_flat(x):
  import faiss
  index = faiss.IndexFlatIP(x.shape[1])
  index.add(x)
  return lambda q, k: index.search(q, k)[1], ""


def scann(x, mode):
  index = ScannIndex.build(x, [str(i) for i in range(len(x))], "benchmark", {"mode": mode})
  settings = ", ".join(f"{key}={value}" for key, value in index.config.items() if value is not None)
  return lambda q, k: index.search(q, k)[0], settings


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--copies", type=int, default=40)
  p.add_argument("--query-copies", type=int, default=9)
  p.add_argument("--noise", type=float, default=0.5)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--cache", type=pathlib.Path, default=ROOT / "runs" / "scifact-minilm.npz")
  args = p.parse_args()
  if not SCIFACT.is_dir():
    sys.exit(f"SciFact not found at {SCIFACT}; this benchmark needs ../shared/data/beir-scifact")

  rng = np.random.default_rng(0)
  doc_emb, query_emb = embeddings(args.cache)
  x = with_copies(doc_emb, args.copies, args.noise, rng)
  q = with_copies(query_emb, args.query_copies, args.noise, rng)
  methods = [("exact (JAX)", lambda: exact_jax(x)), ("faiss IndexFlatIP", lambda: faiss_flat(x))]
  methods += [(f"ScaNN {mode}", lambda mode=mode: scann(x, mode)) for mode in ("auto",) + MODES]
  rows, exact = [], None
  for name, build in methods:
    build_s, qps, found, settings = timed(build, q, args.k)
    exact = found if exact is None else exact
    rows.append(f"| {name} | {settings} | {build_s:.1f} | {qps:.0f} | {recall(found, exact):.4f} |")

  print(f"{len(x)} vectors ({len(doc_emb)} SciFact documents + {args.copies} copies each, noise {args.noise}), "
        f"{len(q)} queries, d={x.shape[1]}, k={args.k}\n")
  print(f"| method | settings | build s | QPS | recall@{args.k} vs exact |")
  print("|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
