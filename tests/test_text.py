"""The one text path: training batches and encoding batches hold the same tokens for the same text."""
import ml_collections
import numpy as np

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
