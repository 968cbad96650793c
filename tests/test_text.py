"""The one text path: training batches and encoding batches hold the same tokens for the same text."""
import ml_collections
import numpy as np
import pytest

import retrax
from retrax.eval import beir, synthetic
from retrax.models.wheel import minilm_path
from retrax.train import examples
from retrax.train.pipeline import Pipeline


def test_training_and_encoding_give_identical_token_arrays(tmp_path):
  synthetic.write_limit_style(tmp_path / "data", num_people=20, num_attributes=30, train_fraction=0.5)
  retriever = retrax.load(minilm_path(), max_length=16, query_prompt="query: ", document_prompt="passage: ")
  training_set = examples.build(tmp_path / "data", "train")
  data = ml_collections.ConfigDict(dict(num_positives=1, num_negatives=0, query_max_len=16, doc_max_len=16))
  pipeline = Pipeline(training_set, retriever.text, data, seed=0, global_batch=8)
  samples = [pipeline.samples[i] for i in range(8)]
  batch = pipeline.collate(samples)
  for side, texts, ids, mask in (("query", [s["query"] for s in samples], batch["query_ids"], batch["query_mask"]),
                                 ("document", [s["docs"][0] for s in samples], batch["doc_ids"][:, 0],
                                  batch["doc_mask"][:, 0])):
    encoded = next(retriever.text.batches(texts, side, len(texts)))
    width = encoded.input_ids.shape[1]
    np.testing.assert_array_equal(encoded.input_ids, ids[encoded.rows, :width])
    np.testing.assert_array_equal(encoded.attention_mask, mask[encoded.rows, :width])
    assert not mask[:, width:].any()
    prompt = retriever.text.tokenizer.encode("query: " if side == "query" else "passage: ").ids[1:-1]
    assert (ids[:, 1:1 + len(prompt)] == prompt).all()  # [CLS], then the side's prompt
  assert (batch["doc_mask"][:, 0].sum(1) == 16).any()  # some documents were truncated


PAIRS = [("what is the cell cycle?", "The cell cycle, or cell-division cycle, is a series of events that take place "
          "in a cell that causes it to divide into two daughter cells."),
         ("a rather long query about the many phases of mitosis and meiosis in eukaryotic cells", "short answer"),
         ("x", "y")]


def test_pairs_are_joined_and_truncated_as_transformers_does():
  """[CLS] q [SEP] d [SEP] with token types 0 then 1, truncated longest_first or only_second, padded right
  or left: the arrays of transformers' tokenizer called on the same pairs."""
  transformers = pytest.importorskip("transformers")
  hf = transformers.AutoTokenizer.from_pretrained(minilm_path())
  path = retrax.load(minilm_path()).text
  queries, documents = [q for q, _ in PAIRS], [d for _, d in PAIRS]
  for truncation in ("longest_first", "only_second"):
    rows = path.pair_rows(queries, documents, 24, truncation)
    expected = hf(queries, documents, truncation=truncation, max_length=24)
    assert [ids for ids, _ in rows] == expected["input_ids"], truncation
    assert [types for _, types in rows] == expected["token_type_ids"], truncation
  for side in ("right", "left"):
    padded = retrax.models.text.TextPath(path.tokenizer, path.pad_id, path.max_lengths, path.prompts, padding_side=side)
    batch = next(padded.pair_batches(queries, documents, 24, batch_size=3))
    hf.padding_side = side
    expected = hf([queries[i] for i in batch.rows], [documents[i] for i in batch.rows], truncation="longest_first",
                  max_length=24, padding="max_length", return_tensors="np")
    np.testing.assert_array_equal(batch.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, expected["attention_mask"])
    np.testing.assert_array_equal(batch.token_type_ids, expected["token_type_ids"])
