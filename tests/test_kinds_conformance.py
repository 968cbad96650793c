"""Every registered kind (models/kinds) against the protocols the generic code relies on: the host
API composes (encode, then score, then index and search, on the encode outputs), shapes and
dtypes, training-time scores equal encode-time scores, save/load/export round trips, and the
bad-input rules. A new kind gets these tests by registering."""
import jax
import numpy as np
import pytest
from flax import nnx

import retrax
from retrax.errors import InputError
from retrax.models import checkpoint, kinds
from retrax.models.kinds.protocols import HostKind, RetrieverModule
from retrax.models.load import random
from retrax.models.vocab import word_level_tokenizer

QUERIES = ["who likes neon kites?", "who plays velvet harps", "quiet green lamps"]
DOCUMENTS = ["Ada likes neon kites and quiet lamps.", "Bo plays velvet harps.", "Cy likes green lamps; kites too",
             "Di likes nothing", "velvet kites, velvet harps, velvet lamps and more velvet"]
BACKBONE = dict(model_type="bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=64)


@pytest.fixture(scope="module", params=sorted(kinds.KINDS))
def model(request):
  kind = kinds.get(request.param)
  tokenizer = word_level_tokenizer(QUERIES + DOCUMENTS, 60)
  settings = kind.Settings(**({"projection": [{"features": 8}], "query_length": 8, "document_length": 16}
                              if kind.name == "colbert" else {}))
  return random({**BACKBONE, "vocab_size": tokenizer.get_vocab_size()}, tokenizer, settings, kind=kind.name)


def test_the_module_and_its_class_follow_the_protocols(model):
  assert isinstance(model.module, RetrieverModule) and isinstance(model.module, HostKind)
  assert kinds.get(model.kind.name) is model.kind


def test_encode_then_score_then_index_and_search(model):
  queries, documents = model.encode_queries(QUERIES), model.encode_documents(DOCUMENTS)
  assert len(queries) == len(QUERIES) and len(documents) == len(DOCUMENTS)
  assert all(np.asarray(x).dtype == np.float32 for x in [*queries, *documents])
  scores = np.asarray(model.score(queries, documents))
  assert scores.shape == (len(QUERIES), len(DOCUMENTS)) and scores.dtype == np.float32
  assert np.isfinite(scores).all()
  one = np.asarray(model.score(model.encode_queries(QUERIES[0]), documents))
  np.testing.assert_allclose(one.reshape(-1), scores[0], rtol=1e-5, atol=1e-6)
  indices, found = model.index(documents, [f"d{i}" for i in range(len(DOCUMENTS))]).search(queries, 3)
  np.testing.assert_array_equal(indices, np.argsort(-scores, axis=1, kind="stable")[:, :3])
  np.testing.assert_allclose(found, np.sort(scores, axis=1)[:, ::-1][:, :3], rtol=1e-5, atol=1e-6)


def test_training_time_scores_equal_encode_time_scores(model):
  """The module's encode on padded token batches (as the train step runs it) and its score give
  what the host API gives on bucketed, unpadded batches."""
  module = model.module
  q_ids, q_mask = model.text.tokenize(QUERIES, "query")
  d_ids, d_mask = model.text.tokenize(DOCUMENTS, "document")
  q = module.encode({"input_ids": q_ids, "attention_mask": q_mask}, "query")
  d = module.encode({"input_ids": d_ids, "attention_mask": d_mask}, "document")
  expected = model.score(model.encode_queries(QUERIES), model.encode_documents(DOCUMENTS))
  np.testing.assert_allclose(np.asarray(module.score(q, d)), expected, rtol=1e-5, atol=1e-5)


def test_save_load_and_export_round_trips(model, tmp_path):
  expected = model.score(model.encode_queries(QUERIES), model.encode_documents(DOCUMENTS))
  checkpoint.save(model, tmp_path / "checkpoint")
  model.save_pretrained(tmp_path / "exported")
  for folder in ("checkpoint", "exported"):
    back = retrax.load(tmp_path / folder)
    assert back.kind is model.kind and back.settings == model.settings, folder
    np.testing.assert_allclose(back.score(back.encode_queries(QUERIES), back.encode_documents(DOCUMENTS)), expected,
                               rtol=1e-5, atol=1e-6, err_msg=folder)
  assert jax.tree.all(jax.tree.map(np.array_equal, nnx.to_pure_dict(retrax.load(tmp_path / "checkpoint").params),
                                   nnx.to_pure_dict(model.params)))


@pytest.mark.parametrize("texts, expected", [
    ({"a": 1}, r"^texts: expected a list \(or another sequence\) of strings, got dict$"),
    (["fine", 3], r"^texts\[1\]: expected a string, got int"),
    (["fine", "\udc80"], r"^texts\[1\]: character 0 is '\\udc80', a lone surrogate")])
def test_bad_texts_are_named_for_every_kind(model, texts, expected):
  for encode in (model.encode_queries, model.encode_documents):
    with pytest.raises(InputError, match=expected):
      encode(texts)
