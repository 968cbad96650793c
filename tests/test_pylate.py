"""ColBERT against PyLate 1.6 itself, run in its own environment (tests/pylate_reference.py; the
README's test command builds .venv-pylate): models that PyLate builds and saves, retrax's exports
loaded by PyLate, and PyLate's training losses with their gradients."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import transformers

import retrax
from retrax.index.multivector import maxsim
from retrax.models.wheel import minilm_path

from retriever_objective import batch, loss_and_grads

REPO = pathlib.Path(__file__).resolve().parents[1]
PYTHON = pathlib.Path(os.environ.get("RETRAX_PYLATE_PYTHON", REPO / ".venv-pylate" / "bin" / "python"))
TEXTS = ["what is the cell cycle?", "The cell cycle, or cell-division cycle, is a series of events; it ends!",
         "x y z, and; more!", "short"]
LENGTHS = dict(query_length=12, document_length=20)
FFN_RESIDUAL = [dict(in_features=32, out_features=64, bias=True, activation="gelu", use_residual=True),
                dict(in_features=64, out_features=16, bias=False, use_residual=True)]

pytestmark = pytest.mark.skipif(not PYTHON.is_file(), reason=f"PyLate's environment {PYTHON} is absent (the README's "
                                                             "test command builds it)")


def pylate(request: dict, tmp_path) -> dict:
  """Runs tests/pylate_reference.py on `request` in PyLate's environment; its arrays."""
  (tmp_path / "request.json").write_text(json.dumps(request))
  out = tmp_path / "pylate.npz"
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
  done = subprocess.run([str(PYTHON), str(REPO / "tests" / "pylate_reference.py"), str(tmp_path / "request.json"),
                         str(out)], capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(np.load(out))


def _tokenizer():
  return transformers.AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module", params=["bert", "modernbert"])
def backbone(request, tmp_path_factory):
  """A tiny random BERT or ModernBERT (torch) with MiniLM's uncased vocabulary. ModernBERT's window
  (±8) bites on documents (20 tokens); it holds a real query token for every expansion position,
  as ModernBERT's ±64 does: a window of masked keys alone is computed differently by
  transformers 5.3 and 5.23."""
  import torch
  folder, tokenizer = tmp_path_factory.mktemp(request.param), _tokenizer()
  torch.manual_seed(0)
  common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)
  if request.param == "bert":
    model = transformers.BertModel(transformers.BertConfig(**common))
  else:
    model = transformers.ModernBertModel(transformers.ModernBertConfig(
        **common, local_attention=16, global_attn_every_n_layers=2, pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id, attn_implementation="eager"))
  model.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  return folder


def _assert_same_vectors(ours: list, theirs: list, atol=1e-4):
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs):
    assert a.shape == b.shape                  # the same tokens kept: expansion, skiplist
    np.testing.assert_allclose(a, b, atol=atol)


def _theirs(arrays, key, n):
  return [arrays[f"{key}{i}"] for i in range(n)]


def _scores(queries, documents):
  pad = lambda vs: {"vectors": np.stack([np.pad(v, ((0, max(map(len, vs)) - len(v)), (0, 0))) for v in vs]),
                    "mask": np.stack([np.arange(max(map(len, vs))) < len(v) for v in vs])}
  return np.asarray(maxsim(pad(queries), pad(documents)))


@pytest.mark.parametrize("projection", [None, FFN_RESIDUAL], ids=["pylate-default", "ffn-upscaled-residual"])
def test_a_colbert_built_by_pylate_encodes_and_scores_alike(backbone, tmp_path, projection):
  """PyLate builds ([Q]/[D] added with its random rows, its projection) and saves; retrax loads the folder."""
  arrays = pylate({"build": {"backbone": str(backbone), "out": str(tmp_path / "pylate"), "embedding_size": 16,
                             "projection": projection, **LENGTHS},
                   "encode": {"queries": TEXTS, "documents": TEXTS}}, tmp_path)
  ours = retrax.load(tmp_path / "pylate")
  assert ours.kind.name == "colbert"
  q, d = ours.encode_queries(TEXTS), ours.encode_documents(TEXTS)
  _assert_same_vectors(q, _theirs(arrays, "q", len(TEXTS)))
  _assert_same_vectors(d, _theirs(arrays, "d", len(TEXTS)))
  np.testing.assert_allclose(_scores(q, d), _scores(_theirs(arrays, "q", 4), _theirs(arrays, "d", 4)), atol=1e-4)


def test_an_exported_colbert_loads_in_pylate_with_the_same_vectors(backbone, tmp_path):
  projection = [{"features": 64, "activation": "gelu", "residual": True}, {"features": 16, "residual": True}]
  ours = retrax.load(backbone, kind="colbert", projection=projection, **LENGTHS)
  ours.save_pretrained(tmp_path / "export")
  arrays = pylate({"load": str(tmp_path / "export"), "encode": {"queries": TEXTS, "documents": TEXTS}}, tmp_path)
  _assert_same_vectors(ours.encode_queries(TEXTS), _theirs(arrays, "q", len(TEXTS)))
  _assert_same_vectors(ours.encode_documents(TEXTS), _theirs(arrays, "d", len(TEXTS)))


def test_minilm_colbert_built_by_pylate_matches_on_scifact(shared_data, tmp_path):
  """all-MiniLM-L6-v2 + PyLate's random 128-d projection; 200 SciFact documents and 100 queries:
  every token vector within cosine 0.9999 of PyLate's, the same tokens kept."""
  from retrax.eval import beir
  collection = beir.load_collection(shared_data / "beir-scifact", "test")
  documents = [beir.document_text(d) for d in list(collection.corpus.values())[:200]]
  queries = list(collection.queries.values())[:100]
  arrays = pylate({"build": {"backbone": str(minilm_path()), "out": str(tmp_path / "pylate"), "embedding_size": 128},
                   "encode": {"queries": queries, "documents": documents}}, tmp_path)
  ours = retrax.load(tmp_path / "pylate")
  for got, key in ((ours.encode_documents(documents), "d"), (ours.encode_queries(queries), "q")):
    reference = _theirs(arrays, key, len(got))
    worst = 1.0
    for a, b in zip(got, reference):
      assert a.shape == b.shape
      worst = min(worst, float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()))
    assert worst >= 0.9999, (key, worst)


DOCUMENTS = [["the cell cycle is a series of events.", "x y z, and; more!", "cells divide"],
             ["short", "The cell cycle, or cell-division cycle, ends!", "mitosis: one phase"]]
TEACHER = [[3.0, -1.0, 0.5], [0.2, 2.0, 1.0]]


@pytest.mark.parametrize("loss", [{"name": "contrastive"},
                                  {"name": "distillation", "normalize_scores": True},
                                  {"name": "distillation", "normalize_scores": False}],
                         ids=["contrastive", "distillation-min-max", "distillation"])
def test_colbert_losses_and_gradients_match_pylates(backbone, tmp_path, loss):
  """PyLate's Contrastive (every document of the batch a candidate, temperature 1) and Distillation
  (KL to the teacher's softmax, optionally of min-max normalised MaxSim scores) against the
  trainer's objective on the same folder: the loss, and the gradient of each projection layer."""
  queries = [TEXTS[0], "what ends the cycle?"]
  arrays = pylate({"build": {"backbone": str(backbone), "out": str(tmp_path / "pylate"), "projection": FFN_RESIDUAL,
                             **LENGTHS},
                   "loss": {**loss, "queries": queries, "documents": DOCUMENTS, "labels": TEACHER}}, tmp_path)
  ours = retrax.load(tmp_path / "pylate")
  if loss["name"] == "contrastive":
    config, labels = dict(name="info_nce", temperature=1.0, in_batch_negatives=True), np.eye(3)[[0, 0]]
  else:
    config = dict(name="kl_distill", min_max=loss["normalize_scores"], in_batch_negatives=False)
    labels = TEACHER
  (value, _), grads = loss_and_grads(ours, config, batch(ours, queries, DOCUMENTS, labels))
  np.testing.assert_allclose(float(value), float(arrays["loss"]), rtol=1e-5)
  for i in range(len(FFN_RESIDUAL)):
    reference = arrays[f"grad{i}"].T                             # torch's [out, in]
    np.testing.assert_allclose(grads["projection"]["layers"][i]["linear"]["kernel"], reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("metadata", [{"query_maxlen": 12, "doc_maxlen": 20, "dim": 16, "attend_to_mask_tokens": False,
                                       "query_token_id": "[unused0]", "doc_token_id": "[unused1]"}, None],
                         ids=["artifact-metadata", "no-metadata"])
def test_a_stanford_colbert_folder_reads_as_pylate_reads_it(tmp_path, metadata):
  """An HF_ColBERT checkpoint (stanford-futuredata/ColBERT's layout: BertModel under `bert.`, a
  bias-free `linear` [dim, hidden], artifact.metadata), loaded by PyLate and by retrax."""
  import torch
  from safetensors.torch import save_file
  folder, tokenizer = tmp_path / "stanford", _tokenizer()
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=256,
                                   architectures=["HF_ColBERT"])
  bert = transformers.BertModel(config)
  weights = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
  folder.mkdir()
  save_file({**weights, "linear.weight": torch.randn(16, 32)}, str(folder / "model.safetensors"))
  config.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  if metadata:
    (folder / "artifact.metadata").write_text(json.dumps(metadata))
  arrays = pylate({"load": str(folder), "encode": {"queries": TEXTS, "documents": TEXTS}}, tmp_path)
  ours = retrax.load(folder)
  assert ours.kind.name == "colbert" and ours.text.markers == {"query": 1, "document": 2}   # [unused0], [unused1]
  _assert_same_vectors(ours.encode_queries(TEXTS), _theirs(arrays, "q", len(TEXTS)))
  _assert_same_vectors(ours.encode_documents(TEXTS), _theirs(arrays, "d", len(TEXTS)))
