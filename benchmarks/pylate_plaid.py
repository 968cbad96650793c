"""PyLate 1.6's PLAID index (fast-plaid) over token vectors, run in its own environment (.venv-plaid:
fast-plaid's builds pin torch, 1.4.6.2110 to torch 2.11; benchmarks/plaid-requirements.txt).

  .venv-plaid/bin/python benchmarks/pylate_plaid.py VECTORS.npz OUT.npz

VECTORS holds `documents` [tokens, d] with `lengths` [documents] (one document's vectors after
another), `queries` with `query_lengths` alike, `k`, `nbits` (PyLate's default: 4) and `settings`
[S, 2]: (n_ivf_probe, n_full_scores) pairs. The index is built once (4 k-means iterations, as
PyLate's default) on the CPU; for each
setting it is opened again with that setting, searched once to warm up, then timed over every
query. OUT gets, per setting i, `ids_i` and `scores_i` [Q, k] (document positions, −1 where
fewer were found) and `search_s_i`, with `build_s` and `index_mb` (the index folder on disk).
"""
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from pylate import indexes


def main(vectors_path, out_path):
  data = np.load(vectors_path)
  split = lambda flat, lengths: [torch.from_numpy(v) for v in np.split(flat, np.cumsum(lengths)[:-1])]
  documents, queries = split(data["documents"], data["lengths"]), split(data["queries"], data["query_lengths"])
  k, nbits = int(data["k"]), int(data["nbits"])
  out = {}
  with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    index = indexes.PLAID(index_folder=folder, index_name="plaid", override=True, device="cpu", show_progress=False,
                           nbits=nbits)
    index.add_documents(documents_ids=[str(i) for i in range(len(documents))],
                        documents_embeddings=documents)
    out["build_s"] = time.perf_counter() - start
    out["index_mb"] = sum(f.stat().st_size for f in pathlib.Path(folder).rglob("*") if f.is_file()) / 2 ** 20
    for i, (probes, full_scores) in enumerate(data["settings"]):
      index = indexes.PLAID(index_folder=folder, index_name="plaid", device="cpu", show_progress=False,
                            nbits=nbits, n_ivf_probe=int(probes), n_full_scores=int(full_scores))
      index(queries[:4], k=k)
      start = time.perf_counter()
      results = index(queries, k=k)
      out[f"search_s_{i}"] = time.perf_counter() - start
      ids, scores = np.full((len(queries), k), -1), np.full((len(queries), k), -np.inf, np.float32)
      for row, found in enumerate(results):
        ids[row, :len(found)] = [int(r["id"]) for r in found]
        scores[row, :len(found)] = [r["score"] for r in found]
      out[f"ids_{i}"], out[f"scores_{i}"] = ids, scores
  np.savez(out_path, **out)


if __name__ == "__main__":
  main(*sys.argv[1:])
