"""Bad input to encode, and non-finite parameters: clear errors, never silently wrong numbers (tiny random model)."""
import dataclasses
import re

import numpy as np
import pytest
from flax import nnx

from retrax.errors import InputError
from retrax.index.exact import ExactIndex
from retrax.index.scann_index import ScannIndex
from retrax.models.kinds.dense import Dense
from retrax.models.load import random
from retrax.models.retriever import Retriever
from retrax.models.sentence_config import SentenceConfig
from retrax.models.vocab import word_level_tokenizer

TEXTS = [f"Who likes Velvet Harps number {i}?" if i % 7 else "Who likes Neon Kites?" for i in range(40)]
POSITIONS = 48


@pytest.fixture(scope="module")
def model():
  config = dict(model_type="bert", vocab_size=0, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=POSITIONS)
  tokenizer = word_level_tokenizer(TEXTS, 100)
  return random({**config, "vocab_size": tokenizer.get_vocab_size()}, tokenizer,
                SentenceConfig(pooling="mean", normalize=True))


def test_a_bare_string_is_one_text(model):
  one = model.encode("Who likes Neon Kites?")
  assert one.shape == (16,)
  np.testing.assert_array_equal(one, model.encode(["Who likes Neon Kites?"])[0])
  assert model.encode_queries("Who likes Neon Kites?").shape == model.encode_documents("x").shape == (16,)


@pytest.mark.parametrize("texts, where, expected", [
    (["fine", 3, "fine"], "texts[1]", "expected a string, got int"),
    (["fine", None], "texts[1]", "expected a string, got NoneType"),
    ([b"bytes"], "texts[0]", "expected a string, got bytes"),
    (b"bytes", "texts", "expected a list (or another sequence) of strings, got bytes"),
    (7, "texts", "expected a list (or another sequence) of strings, got int"),
    ({"a": 1}, "texts", "expected a list (or another sequence) of strings, got dict"),
    ({"a", "b"}, "texts", "expected a list (or another sequence) of strings, got set"),
    (["fine", "bad \udc80 byte"], "texts[1]", "character 4 is '\\udc80', a lone surrogate that UTF-8 cannot "
                                             "encode (text decoded with errors='surrogateescape'?)"),
])
def test_an_item_that_is_not_a_string_is_named(model, texts, where, expected):
  with pytest.raises(InputError, match=f"^{re.escape(where)}: {re.escape(expected)}$"):
    model.encode(texts)


def test_tuples_and_arrays_of_strings_are_texts(model):
  expected = model.encode(TEXTS[:3])
  np.testing.assert_array_equal(model.encode(tuple(TEXTS[:3])), expected)
  np.testing.assert_array_equal(model.encode_documents(np.array(TEXTS[:3])), expected)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_batch_size_below_one_is_an_error(model, batch_size):
  with pytest.raises(InputError, match=f"^batch_size: expected an integer ≥ 1, got {batch_size!r}$"):
    model.encode(TEXTS, batch_size=batch_size)


@pytest.mark.parametrize("max_length", [0, -3, POSITIONS + 1, True])
def test_max_length_outside_the_positions_is_an_error(model, max_length):
  with pytest.raises(InputError, match=f"max_length {max_length!r}: expected an integer from 1 to {POSITIONS}"):
    Retriever(Dense(model.module.backbone, dataclasses.replace(model.settings, max_length=max_length)),
              model.text.tokenizer, source="tiny")


def test_max_length_is_checked_by_the_same_rule_in_training(tmp_path):
  """The trainer refuses config.data.doc_max_len beyond the positions with the encoder's message."""
  from retrax.configs import tiny
  from retrax.train.trainer import train
  config = tiny.get_config()
  config.progress = False
  config.data.doc_max_len = 100                     # the tiny model has 64 positions
  with pytest.raises(InputError, match="^config.data.doc_max_len: max_length 100: expected an integer from 1 to 64"):
    train(config, tmp_path / "w")


def _with_nan_row(model, token: str):
  params = nnx.to_pure_dict(model.params)
  table = np.array(params["backbone"]["word_embeddings"]["embedding"])
  table[model.text.tokenizer.token_to_id(token)] = np.nan
  params["backbone"]["word_embeddings"]["embedding"] = table
  return model.with_params(params)


def test_non_finite_embeddings_name_how_many_texts(model):
  """A NaN in one token's embedding spoils the texts holding it (every 7th); a NaN in [CLS] spoils all."""
  with pytest.raises(InputError, match=r"non-finite representations for (\d+) of the (\d+) texts encoded so far") as e:
    _with_nan_row(model, "neon").encode(TEXTS, batch_size=8)
  bad, seen = map(int, e.value.args[0].split("non-finite representations for ")[1].split(" texts")[0].split(" of the "))
  assert 1 <= bad <= seen and "positions " in str(e.value) and str(e.value).startswith("config.model.random: ")
  positions = [int(p) for p in str(e.value).split("positions ")[1].split(")")[0].replace(", …", "").split(", ")]
  assert all(p % 7 == 0 for p in positions)
  with pytest.raises(InputError, match="non-finite representations for 8 of the 8 texts encoded so far"):
    _with_nan_row(model, "[CLS]").encode(TEXTS, batch_size=8)


@pytest.mark.parametrize("index", [lambda x: ExactIndex(x), lambda x: ScannIndex.build(x, [str(i) for i in range(len(x))], "f")])
def test_indexes_refuse_non_finite_vectors(index):
  vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
  vectors[[3, 9]] = np.nan
  with pytest.raises(ValueError, match=r"2 of the 50 embeddings are not finite \(rows \[3, 9\]\)"):
    index(vectors)
  good = index(np.nan_to_num(vectors))
  with pytest.raises(ValueError, match=r"1 of the 2 queries are not finite"):
    good.search(np.array([[0.0] * 8, [np.inf] + [0.0] * 7], np.float32), 5)
