"""The train step's tasks beyond ranking, model state beyond parameters, after_update, and the
regularizer schedules: each checked against the formula written out by hand in this file."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from retrax.errors import InputError
from retrax.models.kinds.protocols import RerankerModule
from retrax.models.text import TextPath
from retrax.models.vocab import word_level_tokenizer
from retrax.train import objective, regularizers, trainable
from retrax.train.checkpoints import Checkpointer
from retrax.train.mesh import make_mesh
from retrax.train.sharding import DEFAULT_RULES
from retrax.train.step import StepBuilder, TrainState, initial_state, model_state_of, params_of
from retrax.train.tasks import TASKS, Pairs, Reconstruction, Task
from retrax.workdirs import TrainWorkdir

TEXTS = ["the cat sat on the mat", "a dog ran far away", "cats and dogs", "the mat was red",
         "far away a cat sat", "dogs ran on the red mat"]
LEARNING_RATE = 0.1


class Fired(nnx.Variable):
  """How many rows fired each latent: model state beyond the parameters."""


class LinearAutoencoder(nnx.Module):
  """A frozen embedding table stands for a frozen retriever's token states; a ReLU autoencoder
  with an L1 term reconstructs them, counts its latents' activations, and keeps unit-norm decoder rows."""

  def __init__(self, vocab: int, d: int = 4, latents: int = 6, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    self.embedding = nnx.Param(jax.random.normal(keys[0], (vocab, d)))
    self.encoder = nnx.Param(jax.random.normal(keys[1], (d, latents)) / 2)
    decoder = jax.random.normal(keys[2], (latents, d))
    self.decoder = nnx.Param(decoder / jnp.linalg.norm(decoder, axis=1, keepdims=True))
    self.b_dec = nnx.Param(jnp.full((d,), 0.1))
    self.fired = Fired(jnp.zeros((latents,), jnp.int32))

  def activations(self, tokens):
    x = self.embedding[tokens["input_ids"]]
    return x.reshape(-1, x.shape[-1]), tokens["attention_mask"].reshape(-1)

  def reconstruct(self, x):
    z = jax.nn.relu((x - self.b_dec) @ self.encoder)
    self.fired[...] = self.fired[...] + (z > 0).sum(0).astype(jnp.int32)
    return z @ self.decoder + self.b_dec, {"l1": jnp.abs(z).sum(-1).mean()}

  def after_update(self):
    self.decoder[...] = self.decoder[...] / jnp.linalg.norm(self.decoder[...], axis=1, keepdims=True)


class TinyReranker(nnx.Module):
  """score(q, d) = w · mean over the pair's tokens of (E[id] + T[token type])."""
  name = "tiny_reranker"

  def __init__(self, vocab: int, h: int = 8, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    self.embedding = nnx.Param(jax.random.normal(keys[0], (vocab, h)))
    self.types = nnx.Param(jax.random.normal(keys[1], (2, h)))
    self.w = nnx.Param(jax.random.normal(keys[2], (h,)))

  def score_pairs(self, tokens, *, packing=None, dropout=None):
    del packing, dropout
    x = self.embedding[tokens["input_ids"]] + self.types[tokens["token_type_ids"]]
    mask = tokens["attention_mask"][..., None]
    return ((x * mask).sum(-2) / mask.sum(-2)) @ self.w


def _text(max_length=12):
  tokenizer = word_level_tokenizer(TEXTS, 100)
  return TextPath(tokenizer, 0, {"query": max_length, "document": max_length}, {"query": "", "document": ""})


def _step(module, task, **kwargs):
  graphdef, _ = nnx.split(module)
  return StepBuilder(graphdef, task, optax.sgd(LEARNING_RATE), **kwargs)


def _state(module, builder, step=0):
  params = params_of(module)
  train, _ = trainable.split(params, builder.trainable_paths)
  return TrainState(params, builder.optimizer.init(train), jnp.int32(step), model_state_of(module))


def _reference_objective(params, ids, mask, l1_weight):
  """Σ_n w_n ‖x_n − x̂_n‖² / Σ_n w_n + λ·mean_n ‖z_n‖₁, written out."""
  x = params["embedding"][ids].reshape(-1, params["embedding"].shape[1])
  z = jax.nn.relu((x - params["b_dec"]) @ params["encoder"])
  error = ((x - (z @ params["decoder"] + params["b_dec"])) ** 2).sum(-1)
  w = mask.reshape(-1).astype(jnp.float32)
  return (error * w).sum() / w.sum() + l1_weight * jnp.abs(z).sum(-1).mean(), z


def test_every_task_meets_the_protocol():
  assert set(TASKS) == {"ranking", "pairs", "reconstruction"}
  for task in (Pairs(lambda *a: 0.0, 8), Reconstruction()):
    assert isinstance(task, Task)
  assert isinstance(TinyReranker(10), RerankerModule)


def test_reconstruction_step_updates_trainable_parameters_state_and_renormalises():
  """One SGD step of the linear autoencoder at step 2 of a linear L1 warm-up over 4 steps
  (λ = 0.5·2/4): the loss, the L1 term, the new parameters (SGD on the hand-written objective,
  then unit-norm decoder rows), the fired counts, and the frozen table unchanged."""
  text = _text()
  batch = Reconstruction.collate(text, TEXTS[:4])
  module = LinearAutoencoder(100)
  weights = regularizers.Weights(ml_collections.ConfigDict({"l1": {"weight": 0.5, "warmup_steps": 4,
                                                                   "shape": "linear"}}))
  builder = _step(module, Reconstruction(), trainable_paths="(?!embedding).*", weights=weights)
  state = _state(module, builder, step=2)
  before = jax.tree.map(np.asarray, state.params)
  new, metrics = jax.jit(builder)(state, batch, jax.random.key(0))

  ids, mask = jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"])
  (value, z), grads = jax.value_and_grad(lambda p: _reference_objective(p, ids, mask, 0.25), has_aux=True)(before)
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-6)
  np.testing.assert_allclose(metrics["l1"], np.abs(z).sum(-1).mean(), rtol=1e-6)
  np.testing.assert_array_equal(new.params["embedding"], before["embedding"])
  for name in ("encoder", "b_dec"):
    np.testing.assert_allclose(new.params[name], before[name] - LEARNING_RATE * grads[name], rtol=1e-5, atol=1e-7)
  stepped = before["decoder"] - LEARNING_RATE * grads["decoder"]
  np.testing.assert_allclose(new.params["decoder"], stepped / np.linalg.norm(stepped, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-7)
  assert not np.allclose(np.linalg.norm(stepped, axis=1), 1.0)  # the renormalisation did something
  np.testing.assert_array_equal(new.model_state["fired"], (np.asarray(z) > 0).sum(0))
  assert int(new.step) == 3


def test_accumulated_micro_batches_thread_the_model_state():
  """Two micro-batches: the mean of their losses, and counts that add up over both."""
  text = _text()
  batch = Reconstruction.collate(text, TEXTS[:4])
  module = LinearAutoencoder(100)
  whole = _step(module, Reconstruction(), trainable_paths="(?!embedding).*")
  halves = _step(module, Reconstruction(), trainable_paths="(?!embedding).*", accumulate=2)
  state = _state(module, whole)
  params, key = state.params, jax.random.key(0)
  (loss, (_, counts)), _ = jax.jit(halves.plain_grads)(params, batch, key, key, None, state.model_state)
  singles = [whole.batch_loss(params, {k: v[i::2] for k, v in batch.items()}, key, key, None, state.model_state)
             for i in range(2)]
  np.testing.assert_allclose(loss, (singles[0][0] + singles[1][0]) / 2, rtol=1e-6)
  np.testing.assert_array_equal(counts["fired"], singles[0][1][1]["fired"] + singles[1][1][1]["fired"])


def test_model_state_is_sharded_and_checkpointed(tmp_path):
  module = LinearAutoencoder(100)
  builder = _step(module, Reconstruction())
  state = initial_state(module, builder.optimizer, make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1,
                                                                                            tensor=1))),
                        DEFAULT_RULES)
  state = state.replace(model_state={"fired": state.model_state["fired"] + jnp.arange(6, dtype=jnp.int32)})
  config = ml_collections.ConfigDict({"seed": 0})
  checkpointer = Checkpointer(TrainWorkdir(tmp_path), keep=1)
  try:
    checkpointer.save(state.replace(step=state.step + 1), {}, config)
    checkpointer.wait()
    restored, _ = checkpointer.restore(state)
  finally:
    checkpointer.close()
  assert (tmp_path / "checkpoints" / "1" / "model_state").is_dir()
  np.testing.assert_array_equal(restored.model_state["fired"], np.arange(6))
  np.testing.assert_array_equal(restored.params["decoder"], state.params["decoder"])


def test_pairs_are_scored_jointly_with_their_token_types():
  """InfoNCE over each query's candidates of score_pairs, against the formula on the tokenizer's
  own pair encodings; the segment embedding of type 1 gets a gradient, so the type ids arrived."""
  text = _text(16)
  samples = [{"query": TEXTS[0], "docs": TEXTS[1:4], "labels": np.float32([1, 0, 0]),
              "candidate_mask": np.ones(3, bool)},
             {"query": TEXTS[4], "docs": TEXTS[5:6] + TEXTS[:2], "labels": np.float32([1, 0, 0]),
              "candidate_mask": np.ones(3, bool)}]
  loss = objective.loss_fn(ml_collections.ConfigDict(dict(name="info_nce", temperature=1.0,
                                                          in_batch_negatives=False)))
  task = Pairs(loss, max_length=16)
  batch = task.collate(text, samples)
  assert batch["pair_ids"].shape == (2, 3, 16)
  module = TinyReranker(100)
  builder = _step(module, task)
  state = _state(module, builder)
  new, metrics = jax.jit(builder)(state, batch, jax.random.key(0))

  p = jax.tree.map(np.asarray, state.params)
  scores = np.zeros((2, 3))
  for b, sample in enumerate(samples):
    for c, doc in enumerate(sample["docs"]):
      encoding = text.tokenizer.encode(sample["query"], doc)
      x = p["embedding"][encoding.ids] + p["types"][encoding.type_ids]
      scores[b, c] = x.mean(0) @ p["w"]
  expected = np.mean([np.logaddexp.reduce(s) - s[0] for s in scores])
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
  moved = np.abs(np.asarray(new.params["types"]) - p["types"]).sum(-1)
  assert moved[1] > 1e-4


def test_regularizer_weights_follow_their_schedules():
  weights = regularizers.Weights(ml_collections.ConfigDict({
      "flops": {"weight": 3e-4, "warmup_steps": 10}, "l1": {"weight": 2.0, "warmup_steps": 4, "shape": "linear"},
      "fixed": {"weight": 0.5}}))
  for t in (0, 3, 10, 50):
    np.testing.assert_allclose(weights.weight("flops", jnp.int32(t)), 3e-4 * min(1, t / 10) ** 2, rtol=1e-6)
    np.testing.assert_allclose(weights.weight("l1", jnp.int32(t)), 2.0 * min(1, t / 4), rtol=1e-6)
    assert float(weights.weight("fixed", jnp.int32(t))) == 0.5
    assert float(weights.weight("unnamed", jnp.int32(t))) == 1.0
  with pytest.raises(InputError, match="config.regularizers.fixed: the model returns no such regularizer"):
    weights.total(jnp.float32(1), {"flops": 1.0, "l1": 1.0}, 0)


@pytest.mark.parametrize("entry, message", [
    ({"weight": -1.0}, "config.regularizers.r.weight"),
    ({"weight": 1.0, "warmup": 3}, "config.regularizers.r.warmup: not a key of a regularizer"),
    ({"shape": "cubic"}, "config.regularizers.r.shape"),
    (0.1, "config.regularizers.r: expected"),
])
def test_bad_regularizer_configs_are_named(entry, message):
  with pytest.raises(InputError, match=message):
    regularizers.check(ml_collections.ConfigDict({"r": entry}))
