"""PyLate 1.6 as a reference, run in its own environment (.venv-pylate: PyLate pins
sentence-transformers 5.3 and transformers ≤ 5.3, which cannot live beside retrax's test extras).

  .venv-pylate/bin/python tests/pylate_reference.py REQUEST.json OUT.npz

REQUEST is a JSON object; each key present is one step, run in this order:
  build:  {"backbone": folder, "out": folder, "seed": int, "projection": [Dense kwargs] | null, + ColBERT kwargs}
          builds pylate.models.ColBERT on a Hugging Face backbone (projection: a chain of pylate Dense
          layers given by {in_features, out_features, bias, activation ("gelu"|null), use_residual};
          null: PyLate's own default projection) and saves it to `out`;
  load:   a folder for pylate.models.ColBERT (a PyLate or Stanford ColBERT folder; the built model if absent);
  encode: {"queries": [...], "documents": [...]} → q0, q1, … and d0, d1, … token vectors;
  rank:   {"queries": [...], "documents": [...], "k": int} → ids and scores [Q, k]: exhaustive
          pylate.scores.colbert_scores over every document (tiles of 512), top k per query;
  loss:   {"name": "contrastive" | "distillation", "queries": [B], "documents": [B][N], "labels": [B][N] | null,
           "normalize_scores": bool, "temperature": float} → loss and the gradient of every Dense
          layer's linear.weight (grad0, grad1, …).
"""
import json
import sys

import numpy as np
import torch
from pylate import losses, models
from pylate.scores import colbert_scores


def build(spec):
  torch.manual_seed(spec.pop("seed", 0))
  backbone, out, projection = spec.pop("backbone"), spec.pop("out"), spec.pop("projection", None)
  if projection is None:
    model = models.ColBERT(model_name_or_path=backbone, device="cpu", **spec)
  else:
    from sentence_transformers.models import Transformer
    layers = [models.Dense(activation_function=torch.nn.GELU() if p.pop("activation", None) == "gelu"
                           else torch.nn.Identity(), **p) for p in projection]
    model = models.ColBERT(modules=[Transformer(backbone), *layers], device="cpu", **spec)
  model.save_pretrained(out)
  return model


def dense_layers(model):
  return [m for m in model if isinstance(m, models.Dense)]


def loss(model, spec):
  queries = model.tokenize(spec["queries"], is_query=True, pad=True)
  flat = [d for row in spec["documents"] for d in row]
  if spec["name"] == "contrastive":
    columns = list(zip(*spec["documents"]))
    features = [queries] + [model.tokenize(list(c), is_query=False, pad=True) for c in columns]
    fn, labels = losses.Contrastive(model, temperature=spec.get("temperature", 1.0)), None
  else:
    features = [queries, model.tokenize(flat, is_query=False, pad=True)]
    fn = losses.Distillation(model, normalize_scores=spec["normalize_scores"])
    labels = torch.tensor(spec["labels"], dtype=torch.float32)
  model.zero_grad()
  value = fn(features, labels)
  value.backward()
  grads = {f"grad{i}": layer.linear.weight.grad.numpy().copy() for i, layer in enumerate(dense_layers(model))}
  return {"loss": np.float64(value.item()), **grads}


def padded(vectors):
  """Zero-padded [n, L, d] vectors and their [n, L] mask."""
  width = max(len(v) for v in vectors)
  out = torch.zeros(len(vectors), width, vectors[0].shape[1])
  mask = torch.zeros(len(vectors), width)
  for i, v in enumerate(vectors):
    out[i, :len(v)], mask[i, :len(v)] = torch.as_tensor(v), 1
  return out, mask


def rank(model, spec):
  queries, queries_mask = padded(model.encode(spec["queries"], is_query=True, batch_size=32))
  documents = model.encode(spec["documents"], is_query=False, batch_size=32, show_progress_bar=True)
  scores = []
  for start in range(0, len(documents), 512):
    tile, mask = padded(documents[start:start + 512])
    scores.append(colbert_scores(queries, tile, queries_mask, mask, backend="torch"))
  top = torch.cat(scores, dim=1).topk(spec["k"], dim=1)
  return {"ids": top.indices.numpy(), "scores": top.values.numpy()}


def main(request_path, out_path):
  request = json.loads(open(request_path).read())
  out, model = {}, None
  if "build" in request:
    model = build(dict(request["build"]))
  if "load" in request:
    model = models.ColBERT(model_name_or_path=request["load"], device="cpu")
  model.eval()
  if "encode" in request:
    with torch.no_grad():
      for side, key in (("queries", "q"), ("documents", "d")):
        vectors = model.encode(request["encode"][side], is_query=side == "queries", batch_size=8)
        out.update({f"{key}{i}": np.asarray(v, np.float32) for i, v in enumerate(vectors)})
  if "rank" in request:
    with torch.no_grad():
      out.update(rank(model, request["rank"]))
  if "loss" in request:
    out.update(loss(model, request["loss"]))
  np.savez(out_path, **out)


if __name__ == "__main__":
  main(*sys.argv[1:])
