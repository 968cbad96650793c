"""retrax.index: tiled exact search against numpy, ScaNN modes against exact, index folders."""
import json

import numpy as np
import pytest

from retrax.errors import InputError
from retrax.index import scann_index
from retrax.index.exact import ExactIndex
from retrax.index.tiled import top_k_over_tiles
from retrax.index.scann_index import ScannIndex


def reference_top_k(queries, docs, k):
  """numpy top-k by score, ties to the lower index: (indices, scores)."""
  scores = queries @ docs.T
  order = np.lexsort((np.broadcast_to(np.arange(len(docs)), scores.shape), -scores), axis=1)[:, :k]
  return order, np.take_along_axis(scores, order, axis=1)


def clustered(n, d, clusters, rng, spread=0.5):
  """Unit vectors around `clusters` random unit centres."""
  centres = rng.standard_normal((clusters, d)).astype(np.float32)
  noise = spread * rng.standard_normal((n, d)).astype(np.float32)
  x = (centres[rng.integers(0, clusters, n)] + noise) / np.sqrt(d)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("tile", [64, 100, 1000, 4096])
@pytest.mark.parametrize("k", [1, 10, 150])
def test_exact_matches_numpy_with_ties(tile, k):
  rng = np.random.default_rng(0)
  docs = rng.integers(-2, 3, (1000, 8)).astype(np.float32)  # small integers: exact sums, many ties
  queries = rng.integers(-2, 3, (37, 8)).astype(np.float32)
  indices, scores = ExactIndex(docs, tile=tile, query_block=16).search(queries, k)
  ref_indices, ref_scores = reference_top_k(queries, docs, k)
  assert indices.dtype == np.int64 and scores.dtype == np.float32
  np.testing.assert_array_equal(indices, ref_indices)
  np.testing.assert_array_equal(scores, ref_scores)


def test_exact_float_scores():
  rng = np.random.default_rng(1)
  docs, queries = rng.standard_normal((777, 32)).astype(np.float32), rng.standard_normal((5, 32)).astype(np.float32)
  indices, scores = ExactIndex(docs, tile=128).search(queries, 20)
  ref_indices, ref_scores = reference_top_k(queries, docs, 20)
  np.testing.assert_array_equal(indices, ref_indices)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_exact_compiles_once_for_any_number_of_queries():
  rng = np.random.default_rng(2)
  index = ExactIndex(rng.standard_normal((300, 16)).astype(np.float32), tile=64, query_block=8)
  index.search(rng.standard_normal((1, 16)).astype(np.float32), 5)
  compiled = top_k_over_tiles._cache_size()
  for m in (3, 8, 9, 50):
    assert index.search(rng.standard_normal((m, 16)).astype(np.float32), 5)[0].shape == (m, 5)
  assert top_k_over_tiles._cache_size() == compiled


def test_scann_brute_force_is_exact():
  rng = np.random.default_rng(3)
  docs, queries = rng.standard_normal((2000, 32)).astype(np.float32), rng.standard_normal((20, 32)).astype(np.float32)
  index = ScannIndex.build(docs, [f"d{i}" for i in range(2000)], "fp")
  assert index.config["mode"] == "brute_force"
  indices, scores = index.search(queries, 10)
  ref_indices, ref_scores = reference_top_k(queries, docs, 10)
  np.testing.assert_array_equal(indices, ref_indices)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def clustered_set():
  rng = np.random.default_rng(4)
  docs = clustered(30_000, 64, 200, rng)
  queries = docs[rng.integers(0, len(docs), 200)] + 0.3 * rng.standard_normal((200, 64)).astype(np.float32) / 8
  return docs, queries, ExactIndex(docs).search(queries, 10)[0]


@pytest.mark.parametrize("mode", ["ah", "tree_ah"])
def test_scann_approximate_recall(clustered_set, mode):
  docs, queries, exact = clustered_set
  index = ScannIndex.build(docs, [str(i) for i in range(len(docs))], "fp", {"mode": mode})
  found = index.search(queries, 10)[0]
  recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
  assert recall >= 0.9, (mode, index.config, recall)


def test_mode_follows_collection_size():
  assert scann_index.choose_config(10_000)["mode"] == "brute_force"
  assert scann_index.choose_config(50_000) == {"mode": "ah", "num_leaves": None, "num_leaves_to_search": None,
                                               "reorder_k": 100}
  assert scann_index.choose_config(500_000) == {"mode": "tree_ah", "num_leaves": 707, "num_leaves_to_search": 71,
                                                "reorder_k": 100}


def test_overrides():
  config = scann_index.choose_config(50_000, {"mode": "tree_ah", "num_leaves": 100, "reorder_k": 50})
  assert config == {"mode": "tree_ah", "num_leaves": 100, "num_leaves_to_search": 10, "reorder_k": 50}
  assert scann_index.choose_config(50_000, {"mode": "auto", "num_leaves": None})["mode"] == "ah"
  with pytest.raises(InputError, match=r"unknown key\(s\) \['leaves'\]"):
    scann_index.choose_config(50_000, {"leaves": 10})
  with pytest.raises(InputError, match="num_leaves does not apply to mode 'ah'"):
    scann_index.choose_config(50_000, {"num_leaves": 10})
  with pytest.raises(InputError, match="mode: expected"):
    scann_index.choose_config(50_000, {"mode": "hnsw"})
  with pytest.raises(InputError, match="num_leaves_to_search: expected 1 to 10, found 20"):
    scann_index.choose_config(50_000, {"mode": "tree_ah", "num_leaves": 10, "num_leaves_to_search": 20})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  rng = np.random.default_rng(5)
  docs = clustered(3000, 16, 20, rng)
  index = ScannIndex.build(docs, [f"doc{i}" for i in range(3000)], "abc123", {"mode": "tree_ah"})
  folder = tmp_path_factory.mktemp("index") / "scann"
  index.save(folder)
  return index, folder, docs[:50]


def test_save_load_round_trip(saved):
  index, folder, queries = saved
  assert sorted(p.name for p in folder.parent.iterdir()) == ["scann"]  # no .partial left behind
  loaded = ScannIndex.load(folder, dimension=16, fingerprint="abc123")
  assert (loaded.doc_ids, loaded.dimension, loaded.num_vectors, loaded.fingerprint, loaded.config) == (
      index.doc_ids, 16, 3000, "abc123", index.config)
  for got, want in zip(loaded.search(queries, 10), index.search(queries, 10)):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs, message", [
    ({"dimension": 32}, "dimension: expected 32, found 16"),
    ({"fingerprint": "other"}, "fingerprint: expected 'other', found 'abc123'"),
])
def test_load_rejects_a_mismatch(saved, kwargs, message):
  with pytest.raises(InputError, match=message) as error:
    ScannIndex.load(saved[1], **kwargs)
  assert error.value.path.endswith("metadata.json")


def test_load_rejects_a_folder_that_is_not_an_index(tmp_path, saved):
  with pytest.raises(InputError, match="not an index: expected metadata.json") as error:
    ScannIndex.load(tmp_path)
  assert error.value.path == str(tmp_path / "metadata.json")
  meta = json.loads((saved[1] / "metadata.json").read_text())
  (tmp_path / "scann_assets.pbtxt").touch()
  (tmp_path / "metadata.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "doc_ids"}))
  with pytest.raises(InputError, match=r"expected keys \['doc_ids'\]"):
    ScannIndex.load(tmp_path)


def _token_vectors(seed, n, lengths, d=16):
  rng = np.random.default_rng(seed)
  out = [rng.normal(size=(rng.integers(*lengths), d)).astype(np.float32) for _ in range(n)]
  return [x / np.linalg.norm(x, axis=1, keepdims=True) for x in out]


@pytest.mark.parametrize("overrides", [{}, {"mode": "ah"}], ids=["brute-force", "asymmetric-hashing"])
def test_the_token_index_finds_what_exhaustive_maxsim_finds(overrides):
  from retrax.index.multivector import MaxSimIndex
  from retrax.index.token_index import TokenIndex
  docs, queries = _token_vectors(0, 400, (3, 30)), _token_vectors(1, 25, (8, 9))
  exact_ids, exact_scores = MaxSimIndex(docs).search(queries, 10)
  index = TokenIndex.build(docs, [f"d{i}" for i in range(400)], overrides=overrides, k_token=100)
  ids, scores = index.search(queries, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
  assert recall >= 0.98, recall
  found = ids == exact_ids                                    # a document found scores as exhaustively
  np.testing.assert_allclose(scores[found], exact_scores[found], rtol=1e-5)


def test_a_saved_token_index_loads_and_names_a_wrong_dimension_or_model(tmp_path):
  from retrax.index.token_index import TokenIndex
  docs, queries = _token_vectors(2, 50, (2, 10)), _token_vectors(3, 4, (5, 6))
  index = TokenIndex.build(docs, [f"d{i}" for i in range(50)], fingerprint="model-a", k_token=20)
  index.save(tmp_path / "tokens")
  back = TokenIndex.load(tmp_path / "tokens", dimension=16, fingerprint="model-a")
  for a, b in zip(index.search(queries, 5), back.search(queries, 5)):
    np.testing.assert_array_equal(a, b)
  assert back.doc_ids == index.doc_ids and back.k_token == 20
  with pytest.raises(InputError, match=r"metadata.json: dimension: expected 128 \(the model's\), found 16"):
    TokenIndex.load(tmp_path / "tokens", dimension=128)
  with pytest.raises(InputError, match=r"fingerprint: expected 'model-b' \(the model's\), found 'model-a'"):
    TokenIndex.load(tmp_path / "tokens", fingerprint="model-b")
  (tmp_path / "tokens" / "lengths.npy").unlink()
  with pytest.raises(InputError, match=r"lengths.npy: not a token index: no such file"):
    TokenIndex.load(tmp_path / "tokens")
