"""ColBERT (models/kinds/colbert.py) against its references: PyLate's MaxSim example, and
sentence-transformers 6's MultiVectorEncoder loading the PyLate folders retrax exports, and
retrax loading the MultiVectorEncoder's own folders."""
import json

import numpy as np
import pytest
import transformers

import retrax
from retrax.errors import InputError
from retrax.index.multivector import MaxSimIndex, maxsim
from retrax.models.wheel import minilm_path
from retrax.train import losses

from retriever_objective import batch, loss_and_grads

TEXTS = ["what is the cell cycle?", "The cell cycle, or cell-division cycle, is a series of events; it ends!",
         "x y z, and; more!", "short"]
FFN_RESIDUAL = [{"features": 64, "activation": "gelu", "residual": True}, {"features": 16, "residual": True}]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
  """A tiny random BERT (torch) with MiniLM's uncased vocabulary."""
  import torch
  folder = tmp_path_factory.mktemp("bert")
  tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
  transformers.BertModel(config).save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  return folder


def test_maxsim_is_pylates_worked_example():
  """pylate.scores.colbert_scores' docstring: multiplicative masks, no length normalisation."""
  q = np.array([[[1.], [0.], [0.], [0.]], [[0.], [2.], [0.], [0.]], [[0.], [0.], [3.], [0.]]], np.float32)
  d = np.array([[[10.], [0.], [1.]], [[0.], [100.], [10.]], [[1.], [0.], [1000.]]], np.float32)
  q_mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]], np.float32)
  d_mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32)
  scores = maxsim({"vectors": q, "mask": q_mask}, {"vectors": d, "mask": d_mask})
  np.testing.assert_array_equal(scores, [[10, 10, 1000], [20, 20, 2000], [0, 0, 0]])


@pytest.mark.parametrize("projection", [[{"features": 16}], FFN_RESIDUAL], ids=["linear", "ffn-upscaled-residual"])
def test_an_exported_colbert_encodes_as_sentence_transformers_multi_vector_encoder(bert_folder, tmp_path, projection):
  from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
  ours = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20, projection=projection)
  ours.save_pretrained(tmp_path / "colbert")
  theirs = MultiVectorEncoder(str(tmp_path / "colbert"), device="cpu")
  back = retrax.load(tmp_path / "colbert")
  assert back.kind.name == "colbert"
  for side, reference in (("queries", theirs.encode_query(TEXTS)), ("documents", theirs.encode_document(TEXTS))):
    got = getattr(ours, f"encode_{side}")(TEXTS)
    for a, b, c in zip(got, getattr(back, f"encode_{side}")(TEXTS), reference):
      assert a.shape == np.shape(c), side                     # the same tokens kept (skiplist, expansion)
      np.testing.assert_allclose(a, np.asarray(c), atol=1e-5)
      np.testing.assert_array_equal(a, b)
  assert [len(x) for x in ours.encode_queries(TEXTS)] == [12] * len(TEXTS)
  assert len(ours.encode_documents(["x y z, and; more!"])[0]) == 1 + 1 + 5 + 1  # [CLS] [D] x y z and more [SEP]


def test_score_takes_what_encode_returns(bert_folder, tmp_path):
  """model.score(model.encode_queries(q), model.encode_documents(d)) is Σ_i max_j ⟨q_i, d_j⟩ over
  sentence-transformers' MultiVectorEncoder's token vectors of the same export."""
  from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
  ours = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20, projection=[{"features": 16}])
  ours.save_pretrained(tmp_path / "colbert")
  theirs = MultiVectorEncoder(str(tmp_path / "colbert"), device="cpu")
  queries = [np.asarray(q) for q in theirs.encode_query(TEXTS[:2])]
  documents = [np.asarray(d) for d in theirs.encode_document(TEXTS)]
  expected = [[(q @ d.T).max(axis=1).sum() for d in documents] for q in queries]
  np.testing.assert_allclose(ours.score(ours.encode_queries(TEXTS[:2]), ours.encode_documents(TEXTS)), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(ours.score(ours.encode_queries(TEXTS[0]), ours.encode_documents(TEXTS)), expected[:1],
                             rtol=1e-5)


def test_queries_are_marked_and_expanded_with_unattended_masks(bert_folder):
  ours = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20)
  reference = transformers.AutoTokenizer.from_pretrained(bert_folder)(TEXTS[0])["input_ids"]  # [CLS] … [SEP]
  batch = next(ours.text.batches([TEXTS[0]], "query", 1))
  marker, mask_id = ours.text.markers["query"], transformers.AutoTokenizer.from_pretrained(bert_folder).mask_token_id
  expected = reference[:1] + [marker] + reference[1:]
  assert batch.input_ids[0].tolist() == expected + [mask_id] * (12 - len(expected))
  assert batch.attention_mask[0].tolist() == [1] * len(expected) + [0] * (12 - len(expected))
  table = np.asarray(ours.module.backbone.word_embeddings.embedding[...])   # [Q] and [D] appended, mean rows
  vocab = transformers.AutoTokenizer.from_pretrained(bert_folder).vocab_size
  assert table.shape[0] == vocab + 2 and (marker, ours.text.markers["document"]) == (vocab, vocab + 1)
  np.testing.assert_allclose(table[vocab:], np.broadcast_to(table[:vocab].mean(0), (2, table.shape[1])), atol=1e-6)
  attending = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20,
                          attend_to_expansion_tokens=True)
  assert next(attending.text.batches([TEXTS[0]], "query", 1)).attention_mask[0].tolist() == [1] * 12


def test_zero_expansion_zeroes_the_expansion_vectors_and_keeps_the_rest(bert_folder):
  """FlashAttention-trained checkpoints (PyLate #109, #125) against eager ones."""
  computed = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20)
  zeroed = retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20, zero_expansion=True)
  real = len(next(computed.text.batches([TEXTS[0]], "query", 1)).attention_mask[0].nonzero()[0])
  a, b = computed.encode_queries(TEXTS[0]), zeroed.encode_queries(TEXTS[0])
  np.testing.assert_allclose(a[:real], b[:real], atol=1e-6)
  assert np.all(b[real:] == 0) and np.all(np.linalg.norm(a[real:], axis=1) > 0.99)


def test_a_gated_projection_has_no_pylate_form(bert_folder, tmp_path):
  ours = retrax.load(bert_folder, kind="colbert", document_length=20,
                     projection=[{"features": 64, "activation": "silu", "gated": True}, {"features": 16}])
  with pytest.raises(InputError, match=r"projection layers \[0\] are gated \(GLU\)"):
    ours.save_pretrained(tmp_path / "gated")
  assert not (tmp_path / "gated").exists()


def test_exhaustive_maxsim_search_is_brute_force():
  rng = np.random.default_rng(0)
  docs = [rng.normal(size=(rng.integers(1, 9), 6)).astype(np.float32) for _ in range(37)]
  queries = [rng.normal(size=(rng.integers(1, 5), 6)).astype(np.float32) for _ in range(5)]
  indices, scores = MaxSimIndex(docs, tile=8, query_block=2).search(queries, 5)
  brute = np.array([[(q @ d.T).max(1).sum() for d in docs] for q in queries])
  np.testing.assert_array_equal(indices, np.argsort(-brute, axis=1, kind="stable")[:, :5])
  np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :5], rtol=1e-5)


def _assert_encodes_as(ours, theirs, atol=1e-5):
  for side, reference in (("queries", theirs.encode_query(TEXTS)), ("documents", theirs.encode_document(TEXTS))):
    for a, b in zip(getattr(ours, f"encode_{side}")(TEXTS), reference):
      assert a.shape == np.shape(b), side
      np.testing.assert_allclose(a, np.asarray(b), atol=atol)


def test_native_multi_vector_encoder_folders_load_with_their_vectors(bert_folder, tmp_path):
  """sentence-transformers 6's own layout: a PyLate export it re-saves (prompts as markers, fixed
  expansion, punctuation skiplist), and one it builds on a plain BERT (no markers, no expansion,
  no skiplist, its random 128-d Dense)."""
  from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
  retrax.load(bert_folder, kind="colbert", projection=FFN_RESIDUAL, query_length=12,
              document_length=20).save_pretrained(tmp_path / "pylate")
  MultiVectorEncoder(str(tmp_path / "pylate"), device="cpu").save_pretrained(str(tmp_path / "resaved"))
  MultiVectorEncoder(str(bert_folder), device="cpu").save_pretrained(str(tmp_path / "built"))
  for name in ("resaved", "built"):
    theirs, ours = MultiVectorEncoder(str(tmp_path / name), device="cpu"), retrax.load(tmp_path / name)
    assert ours.kind.name == "colbert", name
    _assert_encodes_as(ours, theirs)
  assert retrax.load(tmp_path / "resaved").settings.query_prefix == "[Q] "
  assert not retrax.load(tmp_path / "built").settings.do_query_expansion


def test_a_min_expansion_multi_vector_encoder_is_refused_by_name(bert_folder, tmp_path):
  from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
  retrax.load(bert_folder, kind="colbert", query_length=12, document_length=20).save_pretrained(tmp_path / "pylate")
  MultiVectorEncoder(str(tmp_path / "pylate"), device="cpu").save_pretrained(str(tmp_path / "native"))
  path = tmp_path / "native" / "sentence_bert_config.json"
  config = json.loads(path.read_text())
  config["query_expansion"]["strategy"] = "min"
  path.write_text(json.dumps(config))
  with pytest.raises(InputError, match=r"sentence_bert_config.json: query_expansion .*\"min\" lets longer queries"):
    retrax.load(tmp_path / "native")


@pytest.mark.parametrize("name,labels", [
    ("margin_mse", [[4.0, 1.0, 0.5], [2.0, 3.0, -1.0]]),      # teacher scores; column 0 the positive
    ("lse_pair", [[1, 1, 0], [1, 0, 0]]),                     # two positives for the first query
    ("sum_marg_lh", [[1, 1, 0], [1, 0, 0]])])
def test_the_trainers_maxsim_losses_are_the_losses_of_encoded_vectors(bert_folder, name, labels):
  """The training objective (padded token batches, MaxSim in the step) equals the loss of the
  brute-force MaxSim of what `encode_queries` / `encode_documents` return (scored tokens alone)."""
  ours = retrax.load(bert_folder, kind="colbert", projection=FFN_RESIDUAL, query_length=12, document_length=20)
  queries, documents = TEXTS[:2], [TEXTS[1:4], [TEXTS[0], "cells divide; twice.", "mitosis"]]
  config = dict(name=name, in_batch_negatives=False, **({} if name == "margin_mse" else {"temperature": 0.5}))
  (value, _), _ = loss_and_grads(ours, config, batch(ours, queries, documents, labels, [[0, 1], [3, -1]]))
  q = ours.encode_queries(queries)
  scores = np.array([[(q[b] @ d.T).max(1).sum() for d in ours.encode_documents(row)] for b, row in enumerate(documents)])
  hparams = {k: v for k, v in config.items() if k not in ("name", "in_batch_negatives")}
  expected = getattr(losses, name)(scores.astype(np.float32), np.asarray(labels, np.float32), **hparams)
  np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)
