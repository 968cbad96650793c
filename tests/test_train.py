"""Training pieces in-process: the in-batch layout, GradCache and accumulation against plain
backprop, sharding rules, training rows and mined negatives."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from retrax.errors import InputError
from retrax.eval import beir, synthetic
from retrax.models.backbones import unpadding
from retrax.models.backbones.bert import Bert, BertConfig
from retrax.models.heads.projection import Layer
from retrax.models.kinds.colbert import ColBERT, ColBERTConfig
from retrax.models.kinds.dense import Dense
from retrax.models.sentence_config import SentenceConfig
from retrax.models.text import TextPath
from retrax.models.vocab import word_level_tokenizer
from retrax.train import examples, losses, objective, sharding, trainable
from retrax.train.mesh import make_mesh, mesh_shape
from retrax.train.optimizer import decay_mask, make_optimizer
from retrax.train.pipeline import Pipeline
from retrax.models.dropout import Dropout
from retrax.train.batching import strided_merge, strided_split
from retrax.train.step import StepBuilder, TrainState
from retrax.train.tasks import Ranking


def _batch(b=8, c=3, lq=5, ld=7, seed=0):
  rng = np.random.default_rng(seed)
  doc_index = np.arange(b * c, dtype=np.int32).reshape(b, c)
  return dict(query_ids=rng.integers(1, 50, (b, lq)).astype(np.int32), query_mask=np.ones((b, lq), np.int32),
              doc_ids=rng.integers(1, 50, (b, c, ld)).astype(np.int32), doc_mask=np.ones((b, c, ld), np.int32),
              labels=np.tile(np.eye(c, dtype=np.float32)[0], (b, 1)), candidate_mask=np.ones((b, c), bool),
              doc_index=doc_index, query_positives=doc_index[:, :1].copy())


def test_in_batch_layout_matches_a_loop():
  rng = np.random.default_rng(1)
  b, c, d = 4, 3, 5
  q, docs = rng.normal(size=(b, d)), rng.normal(size=(b, c, d))
  batch = _batch(b, c)
  batch["candidate_mask"][2, 2] = False                       # a padded negative
  batch["doc_index"][3, 1] = 0                                  # row 3's negative is row 0's positive
  batch["query_positives"] = np.array([[0, 7], [3, -1], [6, -1], [9, -1]], np.int32)  # doc 7 is relevant to q0
  scores = np.asarray(objective.candidate_scores(jnp.asarray(q), jnp.asarray(docs), True, Dense.score))
  labels, mask = map(np.asarray, objective.candidate_targets(batch, in_batch=True))
  for i in range(b):
    for cand in range(c):
      for j in range(b):
        col = cand * b + j
        assert np.isclose(scores[i, col], q[i] @ docs[j, cand])
        assert labels[i, col] == (batch["labels"][i, cand] if i == j else 0)
        relevant = batch["doc_index"][j, cand] in batch["query_positives"][i]
        assert mask[i, col] == (batch["candidate_mask"][j, cand] and (i == j or not relevant))
  assert not mask[0, 1 * b + 3] and mask[1, 1 * b + 3]          # doc 0 is hidden from q0 only
  assert not mask[0, 1 * b + 2] and mask[0, 0 * b + 0]          # doc 7 (row 2's negative) is relevant to q0
  own = objective.candidate_scores(jnp.asarray(q), jnp.asarray(docs), False, Dense.score)
  np.testing.assert_allclose(own, np.einsum("bd,bcd->bc", q, docs), rtol=1e-5)


def test_anchor_positive_is_its_own_column_with_hard_negatives():
  """InfoNCE over the in-batch matrix equals a per-query softmax over every other query's candidates."""
  rng = np.random.default_rng(2)
  b, c, d = 4, 2, 6
  q, docs = rng.normal(size=(b, d)).astype(np.float32), rng.normal(size=(b, c, d)).astype(np.float32)
  batch = _batch(b, c)
  scores = objective.candidate_scores(jnp.asarray(q), jnp.asarray(docs), True, Dense.score)
  labels, mask = objective.candidate_targets(batch, True)
  ours = losses.info_nce(scores, labels, mask, temperature=1.0)
  flat = docs.transpose(1, 0, 2).reshape(b * c, d)              # every candidate of the batch
  logits = q @ flat.T
  expected = np.mean([np.logaddexp.reduce(logits[i]) - logits[i, i] for i in range(b)])
  np.testing.assert_allclose(ours, expected, rtol=1e-5)


class _PairedDense(Dense):
  """A test kind whose representation is a pytree, {"u": e, "v": 2e}, with score ⟨u_q, v_d⟩ and a
  regularizer 0.1·mean(u_q²) + mean(|v_d|): what the step does with it is kind-agnostic."""

  def encode(self, tokens, side, **kwargs):
    e = super().encode(tokens, side, **kwargs)
    return {"u": e, "v": 2 * e}

  @staticmethod
  def score(q, d):
    return q["u"] @ d["v"].T

  def regularizers(self, q, d):
    return {"q_square": 0.1 * jnp.mean(q["u"] ** 2), "d_abs": jnp.mean(jnp.abs(d["v"]))}


def _colbert(backbone):
  return ColBERT(backbone, ColBERTConfig(projection=(Layer(8, "gelu", residual=True),), query_length=5,
                                         document_length=7))


def _builder(kind=Dense, **kwargs):
  backbone = Bert(BertConfig("bert", 50, 16, 1, 2, 32, 20), rngs=nnx.Rngs(0))
  model = kind(backbone) if kind is _colbert else kind(backbone, SentenceConfig(pooling="mean", normalize=True))
  graphdef, state = nnx.split(model)
  loss = objective.loss_fn(ml_collections.ConfigDict(dict(name="info_nce", temperature=0.05, in_batch_negatives=True)))
  opt = ml_collections.ConfigDict(dict(warmup_steps=0, total_steps=10, schedule="linear", learning_rate=1e-3,
                                       grad_clip_norm=1.0, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,
                                       weight_decay=0.01))
  task = Ranking(loss, True, kwargs.pop("grad_cache_chunks", 0))
  builder = StepBuilder(graphdef, task, make_optimizer(opt), **kwargs)
  return builder, nnx.to_pure_dict(state)


def _assert_grads_close(ours, reference, rtol):
  """Leaf by leaf, to rtol of the largest reference gradient (some, like key biases', are exactly 0)."""
  scale = max(float(jnp.abs(y).max()) for y in jax.tree.leaves(reference))
  for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("kind", [Dense, _PairedDense, _colbert], ids=["dense", "pytree-with-regularizers", "colbert"])
def test_grad_cache_equals_plain_backprop(kind):
  plain, params = _builder(kind, dropout=0.0)
  cached, _ = _builder(kind, grad_cache_chunks=4, dropout=0.0)
  batch, key, dropout_key = _batch(), jax.random.key(0), jax.random.key(1)
  (loss, (regularizers, _)), grads = jax.jit(plain.plain_grads)(params, batch, key, dropout_key)
  (loss_gc, (regularizers_gc, _)), grads_gc = jax.jit(cached.grad_cache_grads)(params, batch, key, dropout_key)
  assert abs(float(loss) - float(loss_gc)) <= 1e-6 * abs(float(loss))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), regularizers, regularizers_gc)
  _assert_grads_close(grads_gc, grads, 1e-5)


def test_the_loss_adds_the_kinds_regularizers():
  """loss = InfoNCE(⟨u_q, v_d⟩) + 0.1·mean(u_q²) + mean(|v_d|), by hand from the module's representations."""
  builder, params = _builder(_PairedDense, dropout=0.0)
  batch, key = _batch(), jax.random.key(0)
  module = builder.module(params)
  q, d = builder.task.embeddings(module, batch, Dropout.off())
  b, c = batch["labels"].shape
  flat_v = np.asarray(d["v"]).transpose(1, 0, 2).reshape(b * c, -1)   # candidate-major, as in-batch scoring
  logits = np.asarray(q["u"]) @ flat_v.T / 0.05
  info_nce = np.mean([np.logaddexp.reduce(logits[i]) - logits[i, i] for i in range(b)])
  expected = {"q_square": 0.1 * np.mean(np.asarray(q["u"]) ** 2), "d_abs": np.mean(np.abs(np.asarray(d["v"])))}
  loss, (regularizers, _) = builder.batch_loss(params, batch, key, key)
  assert set(regularizers) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(regularizers[name], value, rtol=1e-5)
  np.testing.assert_allclose(loss, info_nce + sum(expected.values()), rtol=1e-5)
  state = TrainState(params, builder.optimizer.init(params), jnp.zeros((), jnp.int32))
  _, metrics = jax.jit(builder)(state, batch, key)
  assert {"loss", "q_square", "d_abs", "grad_norm", "param_norm"} == set(metrics)


def test_grad_cache_replays_each_chunks_dropout_masks():
  """With dropout, GradCache's gradient is the plain gradient of the loss it reports: the loss of
  every chunk embedded with fold_in(dropout key, chunk) and scored on the whole batch."""
  cached, params = _builder(grad_cache_chunks=4)
  batch, key, dropout_key = _batch(), jax.random.key(0), jax.random.key(1)
  (loss_gc, _), grads_gc = jax.jit(cached.grad_cache_grads)(params, batch, key, dropout_key)

  def chunked_loss(params):
    parts = strided_split(jax.tree.map(jnp.asarray, batch), 4)
    module = cached.module(params)
    q, d = strided_merge(jax.lax.map(
        lambda i: cached.task.embeddings(module, jax.tree.map(lambda x: x[i], parts),
                                         Dropout(jax.random.fold_in(dropout_key, i), cached.dropout)),
        jnp.arange(4)))
    return cached.task.objective(q, d, batch, key, module)
  (loss, _), grads = jax.jit(jax.value_and_grad(chunked_loss, has_aux=True))(params)
  assert abs(float(loss) - float(loss_gc)) <= 1e-6 * abs(float(loss))
  _assert_grads_close(grads_gc, grads, 1e-5)
  no_dropout_loss = jax.jit(_builder(grad_cache_chunks=4, dropout=0.0)[0].grad_cache_grads)(
      params, batch, key, dropout_key)[0][0]
  assert abs(float(no_dropout_loss) - float(loss)) > 1e-4   # dropout was on


@pytest.mark.parametrize("shards", [1, 4])
def test_unpadded_sides_give_the_padded_loss_and_gradients(shards):
  """With dropout on: pack indices (as pipeline.global_batch makes them, per block of rows) change
  neither the loss nor the gradients, since each token keeps its masks."""
  builder, params = _builder()
  batch, key, dropout_key = _batch(), jax.random.key(0), jax.random.key(1)
  rng = np.random.default_rng(1)
  batch["query_mask"] = (np.arange(5)[None] < rng.integers(1, 6, (8, 1))).astype(np.int32)
  batch["doc_mask"] = (np.arange(7)[None, None] < rng.integers(1, 8, (8, 3, 1))).astype(np.int32)
  packed = dict(batch)
  for side, mask in (("query", batch["query_mask"]), ("doc", batch["doc_mask"].reshape(24, 7))):
    packed[f"{side}_pack"] = unpadding.pack_index(mask, shards, int(unpadding.shard_tokens(mask, shards).max()))
  grads = jax.jit(builder.plain_grads)
  (loss, _), reference = grads(params, batch, key, dropout_key)
  (loss_packed, _), ours = grads(params, packed, key, dropout_key)
  assert abs(float(loss_packed) - float(loss)) <= 1e-5 * abs(float(loss))
  _assert_grads_close(ours, reference, 1e-5)
  no_dropout = jax.jit(_builder(dropout=0.0)[0].plain_grads)(params, batch, key, dropout_key)[0][0]
  assert abs(float(no_dropout) - float(loss)) > 1e-4   # dropout was on


def test_accumulation_averages_micro_batches():
  """Micro-batch i draws its dropout from fold_in(dropout key, i)."""
  accumulated, params = _builder(accumulate=2)
  batch, key, dropout_key = _batch(), jax.random.key(0), jax.random.key(1)
  (loss, _), grads = jax.jit(accumulated.plain_grads)(params, batch, key, dropout_key)
  parts = [jax.tree.map(lambda x: x[i], strided_split(batch, 2)) for i in range(2)]
  singles = [jax.value_and_grad(accumulated.batch_loss, has_aux=True)(params, p, key, jax.random.fold_in(dropout_key, i))
             for i, p in enumerate(parts)]
  np.testing.assert_allclose(loss, (singles[0][0][0] + singles[1][0][0]) / 2, rtol=1e-6)
  _assert_grads_close(grads, jax.tree.map(lambda a, b: (a + b) / 2, singles[0][1], singles[1][1]), 1e-6)


def test_only_the_trainable_paths_are_differentiated_and_updated():
  pattern = "backbone/layers/0/mlp_(in|out)/.*"
  full, params = _builder(dropout=0.0)
  partial, _ = _builder(dropout=0.0, trainable_paths=pattern)
  batch, key, dropout_key = _batch(), jax.random.key(0), jax.random.key(1)
  train, frozen = trainable.split(params, pattern)
  assert trainable.combine(train, frozen) == params
  assert trainable.paths(train) == [f"backbone/layers/0/{p}" for p in ("mlp_in/bias", "mlp_in/kernel",
                                                                       "mlp_out/bias", "mlp_out/kernel")]
  (loss, _), grads = jax.jit(partial.plain_grads)(train, batch, key, dropout_key, frozen)
  (reference_loss, _), reference = jax.jit(full.plain_grads)(params, batch, key, dropout_key)
  assert abs(float(loss) - float(reference_loss)) <= 1e-6 * abs(float(reference_loss))
  _assert_grads_close(grads, trainable.split(reference, pattern)[0], 1e-6)

  state = TrainState(params, partial.optimizer.init(train), jnp.zeros((), jnp.int32))
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert len(moments) == 2 * len(jax.tree.leaves(train))  # Adam's μ and ν, for the trainable leaves alone
  stepped, _ = jax.jit(partial)(state, batch, key)
  after_train, after_frozen = trainable.split(stepped.params, pattern)
  jax.tree.map(np.testing.assert_array_equal, after_frozen, frozen)
  assert not any(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after_train), jax.tree.leaves(train)))


def test_a_trainable_pattern_that_matches_nothing_or_does_not_parse_is_named():
  _, params = _builder()
  with pytest.raises(InputError, match=r"^config.model.trainable: 'layer/.\*' matches no parameter path; they look "
                                       r"like backbone/embed_norm/bias, "):
    trainable.check(params, "layer/.*")
  with pytest.raises(InputError, match=r"^config.model.trainable: '\(' is not a regular expression"):
    trainable.compile_pattern("(")


def test_strided_split_round_trips():
  x = np.arange(24).reshape(12, 2)
  parts = strided_split(x, 3)
  assert parts.shape == (3, 4, 2) and (parts[1, :, 0] == x[1::3, 0]).all()
  np.testing.assert_array_equal(strided_merge(parts), x)


def test_rules_map_logical_axes_and_replicate_what_does_not_divide():
  mesh = make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)))
  assert sharding.spec_for((8, 4), ("embed", "mlp"), mesh, sharding.DEFAULT_RULES) == PartitionSpec(None, None)

  class FakeMesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 2}
  rules = sharding.DEFAULT_RULES
  assert sharding.spec_for((384, 1536), ("embed", "mlp"), FakeMesh, rules) == PartitionSpec("fsdp", "tensor")
  assert sharding.spec_for((30522, 384), ("vocab", "embed"), FakeMesh, rules) == PartitionSpec("tensor", "fsdp")
  assert sharding.spec_for((2, 384), ("vocab", "embed"), FakeMesh, rules) == PartitionSpec("tensor", "fsdp")
  assert sharding.spec_for((3, 6), ("vocab", "embed"), FakeMesh, rules) == PartitionSpec(None, None)
  assert sharding.spec_for((8, 8), ("embed", "embed"), FakeMesh, rules) == PartitionSpec("fsdp", None)


def test_mesh_sizes_fill_and_fail_clearly():
  assert mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
  with pytest.raises(InputError, match="needs 4 devices; 8 are present"):
    mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)
  with pytest.raises(InputError, match="do not split"):
    mesh_shape(dict(data=-1, fsdp=3, tensor=1), 8)


def test_no_weight_decay_on_norms_and_biases():
  _, params = _builder()
  mask = decay_mask(params)["backbone"]
  assert mask["layers"][0]["query"]["kernel"] and mask["word_embeddings"]["embedding"]
  assert not mask["layers"][0]["query"]["bias"] and not mask["embed_norm"]["scale"]


def test_bad_training_rows_are_counted_not_silent(tmp_path):
  data = tmp_path / "data"
  (data / "qrels").mkdir(parents=True)
  (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in (
      {"_id": "d1", "title": "", "text": "one"}, {"_id": "d2", "title": "", "text": "two"},
      {"_id": "d3", "title": "", "text": ""})))
  (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in (
      {"_id": "q1", "text": "first"}, {"_id": "q2", "text": "   "}, {"_id": "q3", "text": "third"},
      {"_id": "q4", "text": "fourth"})))
  (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\nq3\td3\t1\nq4\td2\t0\n")
  (tmp_path / "neg.jsonl").write_text('{"qid": "q1", "negatives": ["d2", "nope"]}\n{"qid": "q9", "negatives": []}\n')
  built = examples.build(data, "train", tmp_path / "neg.jsonl")
  assert [(r.qid, r.positives, r.negatives) for r in built.rows] == [("q1", ("d1",), ("d2",))]
  assert built.skipped == {"empty_query": 1, "empty_positive": 1, "no_positive": 1, "unknown_negative_id": 1,
                           "unknown_qid_in_candidates": 1}
  assert built.summary().startswith("1 training rows; skipped 5")


def test_candidates_file_errors_name_the_line(tmp_path):
  path = tmp_path / "neg.jsonl"
  path.write_text('{"qid": "q1", "negatives": ["d2"]}\n{"qid": "q2", "negatives": "d3"}\n')
  with pytest.raises(InputError, match=r"neg\.jsonl:2: \"negatives\" must be a list"):
    examples.read_candidates(path)
  path.write_text('{"qid": "q1"}\n{"qid": "q1"}\n')
  with pytest.raises(InputError, match=r"neg\.jsonl:2: duplicate qid 'q1'"):
    examples.read_candidates(path)


def test_mined_negatives_are_the_top_unjudged_documents(tmp_path):
  from retrax.train import mining
  from retrax.eval import beir
  synthetic.write_limit_style(tmp_path / "data", num_people=20, num_attributes=30, train_fraction=0.5)
  collection = beir.load_collection(tmp_path / "data", split="train")

  class BagOfWords:  # a transparent scorer: shared lower-cased words
    vocab = sorted({w for d in collection.corpus.values() for w in beir.document_text(d).lower().split()})

    def _encode(self, texts, *_):
      return np.array([[t.lower().split().count(w) for w in self.vocab] for t in texts], np.float32)
    encode_documents = encode_queries = _encode

    def index(self, documents, doc_ids):
      return Dense.index(documents, doc_ids)

  mining.mine_negatives(BagOfWords(), collection, tmp_path / "neg.jsonl", depth=3, skip_top=1, batch_size=8)
  mined = examples.read_candidates(tmp_path / "neg.jsonl")
  assert set(mined) == set(collection.qrels)
  doc_ids = list(collection.corpus)
  docs = BagOfWords()._encode([beir.document_text(collection.corpus[d]) for d in doc_ids])
  for qid, entry in mined.items():
    scores = docs @ BagOfWords()._encode([collection.queries[qid]])[0]
    order = [doc_ids[i] for i in sorted(range(len(doc_ids)), key=lambda i: (-scores[i], i))
             if doc_ids[i] not in collection.qrels[qid]]
    assert entry["negatives"] == order[1:4]


def test_hosts_local_batches_end_to_end_are_the_one_process_batch(tmp_path):
  """Rows keep their global positions on any number of hosts, so position-drawn dropout masks agree."""
  synthetic.write_limit_style(tmp_path / "data", num_people=20, num_attributes=30, train_fraction=0.5)
  training_set = examples.build(tmp_path / "data", "train")
  texts = [beir.document_text(d) for d in training_set.collection.corpus.values()]
  tokenizer = word_level_tokenizer(texts + list(training_set.collection.queries.values()), 200)
  data = ml_collections.ConfigDict(dict(num_positives=1, num_negatives=0, query_max_len=8, doc_max_len=16))

  def batches(process_index, process_count):
    text = TextPath(tokenizer, 0, {"query": 8, "document": 16}, {"query": "", "document": ""})
    pipeline = Pipeline(training_set, text, data, seed=3, global_batch=8, process_index=process_index,
                        process_count=process_count)
    return [pipeline.dataset[i] for i in range(3)]
  one = batches(0, 1)
  hosts = [batches(p, 2) for p in range(2)]
  for i in range(3):
    for key in one[i]:
      np.testing.assert_array_equal(np.concatenate([hosts[0][i][key], hosts[1][i][key]]), one[i][key])
