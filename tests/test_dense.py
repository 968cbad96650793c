"""Dense retriever on the real all-MiniLM-L6-v2 against sentence-transformers."""
import gzip
import itertools
import json

import numpy as np
import pytest

import retrax
from retrax.errors import InputError
from retrax.models.backbones import unpadding
from retrax.models.retriever import Retriever
from retrax.models.wheel import minilm_path

sentence_transformers = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def minilm():
  return retrax.load(minilm_path())


@pytest.fixture(scope="module")
def st_minilm():
  return sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")


def _scifact_texts(folder, n):
  with gzip.open(folder / "beir-scifact" / "corpus.jsonl.gz", "rt") as f:
    docs = [json.loads(line) for line in itertools.islice(f, n)]
  return [(d["title"] + " " + d["text"]).strip() for d in docs]


def test_scifact_documents_match_sentence_transformers(shared_data, minilm, st_minilm):
  """The first 200 SciFact documents (titles and abstracts, many beyond 256 tokens and truncated)."""
  texts = _scifact_texts(shared_data, 200)
  ours = minilm.encode_documents(texts, batch_size=32)
  theirs = st_minilm.encode(texts, batch_size=32, convert_to_numpy=True)
  cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
  assert ours.dtype == np.float32 and ours.shape == (200, 384)
  assert cosine.min() >= 0.9999


def test_order_is_kept_and_each_bucket_and_capacity_compiles_once(minilm, st_minilm):
  texts = ["short", "a much longer sentence " * 30, "medium length text here", "", "x " * 400] * 3
  fresh = Retriever(minilm.module, minilm.text.tokenizer)
  shapes = {(b.input_ids.shape[1], unpadding.token_capacity(b.attention_mask))
            for order in (texts, texts[::-1]) for b in fresh.text.batches(order, "document", 4)}
  assert any(capacity for _, capacity in shapes)
  ours = fresh.encode(texts, batch_size=4)
  theirs = st_minilm.encode(texts, batch_size=4, convert_to_numpy=True)
  np.testing.assert_allclose(ours, theirs, atol=2e-5)
  fresh.encode(texts[::-1], batch_size=4)
  assert fresh._encode_batch._cache_size() == len(shapes)  # one compilation per (bucket, capacity) met, none per batch


def test_a_bare_string_is_one_text_as_in_sentence_transformers(minilm, st_minilm):
  text = "the cell cycle is regulated by cyclins"
  ours, theirs = minilm.encode(text), st_minilm.encode(text, convert_to_numpy=True)
  assert ours.shape == theirs.shape == (384,)
  np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_prompts_prefix_queries_and_documents(minilm):
  prompted = retrax.load(minilm_path(), query_prompt="query: ", document_prompt="passage: ")
  np.testing.assert_allclose(prompted.encode_queries(["cats"]), minilm.encode(["query: cats"]), atol=1e-6)
  np.testing.assert_allclose(prompted.encode_documents(["cats"]), minilm.encode(["passage: cats"]), atol=1e-6)


def test_bfloat16_stays_close(minilm):
  texts = ["the cell cycle is regulated by cyclins", "quantum dots emit light"]
  low = retrax.load(minilm_path(), dtype="bfloat16").encode(texts)
  assert low.dtype == np.float32
  assert ((low * minilm.encode(texts)).sum(1) > 0.99).all()


def test_saved_folder_loads_in_sentence_transformers(minilm, tmp_path):
  texts = ["a first sentence", "and a second one, a little longer"]
  minilm.save_pretrained(tmp_path / "saved")
  reloaded = sentence_transformers.SentenceTransformer(str(tmp_path / "saved"), device="cpu")
  np.testing.assert_allclose(reloaded.encode(texts, convert_to_numpy=True), minilm.encode(texts), atol=1e-5)
  assert retrax.load(tmp_path / "saved").fingerprint() == minilm.fingerprint()


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path):
  with pytest.raises(InputError, match="expected a Hugging Face model folder"):
    retrax.load(tmp_path)


def test_retrax_checkpoint_round_trip(minilm, tmp_path):
  from retrax.models import checkpoint
  checkpoint.save(minilm, tmp_path / "ckpt")
  assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no ckpt.partial-<pid> left
  restored = retrax.load(tmp_path / "ckpt")
  assert restored.fingerprint() == minilm.fingerprint()
  np.testing.assert_array_equal(restored.encode(["same numbers"]), minilm.encode(["same numbers"]))
