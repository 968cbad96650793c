"""The trainer runs every task: it picks the task by the model's protocol (a reranker trains on
pairs, a model over a frozen backbone on reconstruction), the pipeline lays out and trims that
task's batches, and the checkpoint holds what the task trained, model state included. The
models are the tiny test kinds (tests/tiny_kinds.py)."""
import json

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import retrax
from retrax.configs import common
from retrax.errors import InputError
from retrax.eval import beir
from retrax.models.reranker import Reranker
from retrax.train import examples, objective, trainer
from retrax.train.mesh import make_mesh
from retrax.train.model_setup import build_model, data_folder
from retrax.train.pipeline import Pipeline, global_batch
from retrax.train.sharding import DEFAULT_RULES
from retrax.train.tasks import Pairs

from tiny_kinds import SAMPLE, TinyAutoencoder, TinyReranker, register

BACKBONE = dict(model_type="bert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=128, type_vocab_size=2)


def _config(kind, **overrides):
  c = common.train_config()
  c.model.kind = kind
  c.model.random = BACKBONE
  c.model.vocab_size = 300
  c.total_steps, c.batch_size, c.learning_rate, c.warmup_steps = 24, 8, 3e-3, 2
  c.log_every, c.checkpoint_every, c.progress = 4, 12, False
  c.data.generated.num_people, c.data.generated.num_attributes = 60, 120
  c.data.query_max_len, c.data.doc_max_len = 16, 32
  c.update_from_flattened_dict(overrides)
  return c


def _losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _negatives(config, tmp_path) -> str:
  """A candidates file: 8 judged-irrelevant documents per training query (a first stage's would do),
  for the collection the config generates, written at tmp_path / "data"."""
  folder = data_folder(config.data, tmp_path / "data")
  collection = beir.load_collection(folder, "train")
  rng, doc_ids = np.random.default_rng(0), list(collection.corpus)
  with open(tmp_path / "negatives.jsonl", "w") as f:
    for q, judged in collection.qrels.items():
      pool = [d for d in doc_ids if d not in judged]
      f.write(json.dumps({"qid": q, "negatives": [str(d) for d in rng.choice(pool, 8, replace=False)]}) + "\n")
  return str(tmp_path / "negatives.jsonl")


def test_a_reranker_trains_on_pairs_with_their_token_types(tmp_path, monkeypatch):
  register(monkeypatch, TinyReranker)
  config = _config("tiny_reranker", **{"loss.in_batch_negatives": False, "loss.temperature": 1.0,
                                       "data.num_negatives": 3, "total_steps": 60, "batch_size": 16,
                                       "learning_rate": 1e-3, "log_every": 5, "checkpoint_every": 60})
  config.data.candidates = _negatives(config, tmp_path)
  config.data.path = str(tmp_path / "data")
  trainer.train(config, tmp_path / "w")
  losses = _losses(tmp_path / "w")
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses  # from about log 4

  model = retrax.load(tmp_path / "w")
  assert isinstance(model, Reranker)
  start = build_model(config.model, tmp_path / "data", "train", "float32", seed=config.seed)
  pairs = [("Who likes Neon Kites?", "Ann likes Neon Kites and tea."), ("x", "y")]
  assert not np.allclose(model.predict(pairs), start.predict(pairs))


def test_the_pairs_pipeline_trims_every_array_of_a_pair_alike(tmp_path, monkeypatch):
  """A global batch of pairs: ids, mask and token types cut to one bucket; type 1 exactly on the
  candidate's segment, as the tokenizer's pair encoding has it."""
  register(monkeypatch, TinyReranker)
  config = _config("tiny_reranker", **{"data.num_negatives": 2, "model.max_length": 128})
  negatives = _negatives(config, tmp_path)
  model = build_model(config.model, tmp_path / "data", "train", "float32", seed=0)
  task = Pairs(objective.loss_fn(ml_collections.ConfigDict(dict(name="info_nce", temperature=1.0))), model.max_length)
  pipeline = Pipeline(examples.build(tmp_path / "data", "train", negatives), model.text, config.data, seed=0,
                      global_batch=4, task=task)
  samples = [pipeline.samples[i] for i in range(4)]
  local = pipeline.collate(samples)
  batch = global_batch(local, make_mesh(config.mesh), DEFAULT_RULES, pipeline.buckets, task.unpadded)
  width = batch["pair_ids"].shape[-1]
  assert width < model.max_length and width in pipeline.buckets["pair"]
  assert batch["pair_mask"].shape == batch["pair_type_ids"].shape == (4, 3, width)
  for b, sample in enumerate(samples):
    for c, doc in enumerate(sample["docs"]):
      encoding = model.text.tokenizer.encode(sample["query"], doc)
      n = len(encoding.ids)
      np.testing.assert_array_equal(np.asarray(batch["pair_ids"][b, c, :n]), encoding.ids)
      np.testing.assert_array_equal(np.asarray(batch["pair_type_ids"][b, c, :n]), encoding.type_ids)
      assert not np.asarray(batch["pair_mask"][b, c, n:]).any()


def test_a_model_over_a_frozen_backbone_trains_on_reconstruction(tmp_path, monkeypatch):
  """The L1 warm-up from config.regularizers, unit-norm decoder rows, the fired counts in the
  checkpoint and loaded back, a retriever that did not move, described by parts in the manifest."""
  register(monkeypatch, TinyAutoencoder)
  config = _config("tiny_autoencoder", **{"model.trainable": "(?!retriever/).*"})
  config.regularizers = ml_collections.ConfigDict({"l1": {"weight": 0.01, "warmup_steps": 8, "shape": "linear"}})
  trainer.train(config, tmp_path / "w")
  rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert "l1" in rows[0]
  losses = [r["loss"] for r in rows]
  assert losses[-1] < losses[0], losses

  model = retrax.load(tmp_path / "w")
  module = model.module
  np.testing.assert_allclose(np.linalg.norm(np.asarray(module.decoder[...]), axis=1), 1.0, rtol=1e-5)
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.restore(tmp_path / "w" / "checkpoints" / "24" / "model_state")
  fired = np.asarray(module.fired[...])
  np.testing.assert_array_equal(fired, saved["fired"])
  tokens = config.total_steps * config.batch_size * config.data.doc_max_len
  assert 0 < fired.sum() <= tokens * len(fired)
  start = build_model(config.model, tmp_path / "w" / "data", "train", "float32", seed=config.seed)
  for x, y in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(module.backbone, nnx.Param))),
                  jax.tree.leaves(nnx.to_pure_dict(nnx.state(start.module.backbone, nnx.Param)))):
    np.testing.assert_array_equal(x, y)
  assert model.encode_documents(["Ann likes tea."]).shape == (1, 24)
  manifest = json.loads((tmp_path / "w" / "retriever.json").read_text())
  assert manifest["kind"] == "tiny_autoencoder" and manifest["parts"]["retriever"]["kind"] == "dense"
  assert manifest["parts"]["retriever"]["parts"]["backbone"]["architecture"]["hidden_size"] == BACKBONE["hidden_size"]


def test_create_initialises_from_a_sample_of_the_training_texts(tmp_path, monkeypatch):
  """b_dec of a new model is the mean token state of the first texts the trainer hands to create
  (the collection's documents, then its queries)."""
  register(monkeypatch, TinyAutoencoder)
  config = _config("tiny_autoencoder")
  folder = data_folder(config.data, tmp_path / "data")
  model = build_model(config.model, folder, "train", "float32", seed=0)
  collection = beir.load_collection(folder, "train")
  texts = [beir.document_text(d) for d in collection.corpus.values()] + list(collection.queries.values())
  ids, mask = model.text.tokenize(texts[:SAMPLE], "document")
  hidden = np.asarray(model.module.backbone(ids, mask, None, None, None))
  expected = hidden[mask.astype(bool)].mean(0)
  np.testing.assert_allclose(np.asarray(model.module.b_dec[...]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({}, "config.loss.in_batch_negatives: a reranker reads each"),
    ({"loss.in_batch_negatives": False, "grad_cache_chunks": 2}, "config.grad_cache_chunks: GradCache applies"),
    ({"loss.in_batch_negatives": False, "eval.every": 4}, "config.eval.every: retrieves with the model"),
])
def test_settings_that_do_not_apply_to_a_reranker_are_named(tmp_path, monkeypatch, overrides, message):
  register(monkeypatch, TinyReranker)
  with pytest.raises(InputError, match=message):
    trainer.train(_config("tiny_reranker", **overrides), tmp_path / "w")
