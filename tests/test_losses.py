"""Losses of retrax.train.losses against hand-computed values, plain-numpy references, finite
differences, identities, masking, extreme scores and the PyTorch / sentence-transformers conventions."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retrax.train import losses as L

KEY = jax.random.PRNGKey(0)


def rand1_fixed(scores, labels, mask=None, **kw):
  return L.rand1_lh(scores, labels, mask, key=KEY, **kw)


def symmetric_info_nce(scores, labels, mask=None, **kw):
  return L.info_nce(scores, labels, mask, symmetric=True, **kw)


# ----------------------------------------------------------------------------- plain-numpy references
def log_softmax(v):
  v = np.asarray(v, np.float64)
  return v - v.max() - np.log(np.exp(v - v.max()).sum())


def rows_of(scores, labels, mask):
  """Per row: (valid scores, valid labels), in float64."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
  m = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
  return [(s[i][m[i]], y[i][m[i]]) for i in range(s.shape[0])]


def mean_or_zero(values):
  return float(np.mean(values)) if values else 0.0


def ref_info_nce(scores, labels, mask=None, temperature=0.05):
  out = []
  for s, y in rows_of(scores, labels, mask):
    if (y > 0).any():
      out.append(-log_softmax(s / temperature)[y > 0].mean())
  return mean_or_zero(out)


def ref_symmetric(scores, labels, mask=None, temperature=0.05):
  b = len(scores)
  mask_t = None if mask is None else np.asarray(mask)[:, :b].T
  backward = ref_info_nce(np.asarray(scores)[:, :b].T, np.asarray(labels)[:, :b].T, mask_t, temperature)
  return (ref_info_nce(scores, labels, mask, temperature) + backward) / 2


def ref_joint_lh(scores, labels, mask=None, temperature=0.05):
  return mean_or_zero([-log_softmax(s / temperature)[y > 0].sum()
                       for s, y in rows_of(scores, labels, mask) if (y > 0).any()])


def ref_sum_marg_lh(scores, labels, mask=None, temperature=0.05):
  return mean_or_zero([-np.log(np.exp(log_softmax(s / temperature))[y > 0].sum())
                       for s, y in rows_of(scores, labels, mask) if (y > 0).any()])


def ref_lse_pair(scores, labels, mask=None, temperature=0.05):
  out = []
  for s, y in rows_of(scores, labels, mask):
    if (y > 0).any():
      total = sum(math.exp((sn - sp) / temperature) for sp in s[y > 0] for sn in s[y <= 0])
      out.append(math.log1p(total))
  return mean_or_zero(out)


def ref_margin_mse(scores, labels, mask=None, positive_mask=None):
  s, t = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
  m = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
  pos = np.zeros(s.shape, bool)
  pos[:, 0] = True
  if positive_mask is not None:
    pos = np.broadcast_to(np.asarray(positive_mask, bool), s.shape)
  out = []
  for i in range(len(s)):
    p_idx = [j for j in range(s.shape[1]) if m[i, j] and pos[i, j]]
    n_idx = [j for j in range(s.shape[1]) if m[i, j] and not pos[i, j]]
    pairs = [((s[i, p] - s[i, n]) - (t[i, p] - t[i, n])) ** 2 for p in p_idx for n in n_idx]
    if pairs:
      out.append(np.mean(pairs))
  return mean_or_zero(out)


def ref_kl(scores, labels, mask=None, temperature=1.0, teacher_temperature=1.0):
  out = []
  for s, t in rows_of(scores, labels, mask):
    if len(s):
      log_q = log_softmax(t / teacher_temperature)
      out.append(np.sum(np.exp(log_q) * (log_q - log_softmax(s / temperature))))
  return mean_or_zero(out)


def ref_listnet(scores, labels, mask=None, temperature=1.0):
  return mean_or_zero([-np.sum(np.exp(log_softmax(y)) * log_softmax(s / temperature))
                       for s, y in rows_of(scores, labels, mask) if len(s)])


def psd_sqrt(a):
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def ref_wasserstein(scores, labels, mask=None, temperature=1.0):
  """Closed-form W2^2 between Gaussians fitted to the rows (Dowson & Landau / Frechet distance)."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
  m = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
  rows = m.any(1)
  x = np.zeros(s.shape)
  t = np.zeros(s.shape)
  for i in np.flatnonzero(rows):
    x[i, m[i]] = np.exp(log_softmax(s[i, m[i]] / temperature))
    t[i, m[i]] = np.exp(log_softmax(y[i, m[i]]))
  x, t = x[rows], t[rows]
  cov_x = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((s.shape[1],) * 2)
  cov_y = np.cov(t, rowvar=False) if len(t) > 1 else np.zeros((s.shape[1],) * 2)
  root_x = psd_sqrt(cov_x)
  fidelity = np.trace(psd_sqrt(root_x @ cov_y @ root_x))
  mean_term = np.sum((x.mean(0) - t.mean(0)) ** 2)
  return mean_term + np.trace(cov_x) + np.trace(cov_y) - 2 * fidelity


def ref_weighted_ranknet(scores, labels, mask=None):
  out = []
  for s, r in rows_of(scores, labels, mask):
    pairs = [math.log1p(math.exp(-(s[j] - s[k]))) / (r[j] + r[k])
             for j in range(len(s)) for k in range(len(s)) if r[j] < r[k]]
    if pairs:
      out.append(np.mean(pairs))
  return mean_or_zero(out)


def ref_flops(representations, mask):
  w = np.abs(np.asarray(representations, np.float64))[np.asarray(mask, bool)]
  return float(np.sum(w.mean(0) ** 2))


# ----------------------------------------------------------------------------- random cases
def random_labels(kind, rng, shape):
  b, n = shape
  if kind == "onehot":
    return np.eye(n)[rng.integers(0, n, b)]
  if kind == "binary":
    y = (rng.random(shape) < 0.4).astype(float)
    y[:, 0] = 1.0
    return y
  if kind == "teacher":
    return rng.normal(size=shape) * 3
  if kind == "grades":
    return rng.integers(0, 4, shape).astype(float)
  if kind == "ranks":
    return np.stack([rng.permutation(n) + 1.0 for _ in range(b)])
  raise ValueError(kind)


# name: (function, numpy reference, label kind, hyperparameters)
CASES = {
    "info_nce": (L.info_nce, ref_info_nce, "onehot", {"temperature": 0.5}),
    "info_nce_symmetric": (symmetric_info_nce, ref_symmetric, "square", {"temperature": 0.5}),
    "joint_lh": (L.joint_lh, ref_joint_lh, "binary", {"temperature": 0.5}),
    "sum_marg_lh": (L.sum_marg_lh, ref_sum_marg_lh, "binary", {"temperature": 0.5}),
    "lse_pair": (L.lse_pair, ref_lse_pair, "binary", {"temperature": 0.5}),
    "rand1_lh": (rand1_fixed, None, "binary", {"temperature": 0.5}),
    "margin_mse": (L.margin_mse, ref_margin_mse, "teacher", {}),
    "kl_distill": (L.kl_distill, ref_kl, "teacher", {"temperature": 0.7, "teacher_temperature": 2.0}),
    "listnet": (L.listnet, ref_listnet, "grades", {"temperature": 0.7}),
    "wasserstein": (L.wasserstein, ref_wasserstein, "grades", {"temperature": 0.7}),
    "weighted_ranknet": (L.weighted_ranknet, ref_weighted_ranknet, "ranks", {}),
}


def make_case(name, seed=0, shape=(4, 7), dtype=np.float32):
  rng = np.random.default_rng(seed)
  kind = CASES[name][2]
  if kind == "square":
    labels = np.eye(*shape)
  else:
    labels = random_labels(kind, rng, shape)
  scores = rng.normal(size=shape) * 1.5
  return scores.astype(dtype), labels.astype(dtype)


def stable(name, labels):
  """rand1_lh's draw depends on the matrix shape; with one positive per row there is nothing to draw."""
  if name != "rand1_lh":
    return labels
  return np.eye(labels.shape[1], dtype=labels.dtype)[np.zeros(len(labels), int)]


def call(name, scores, labels, mask=None):
  fn, _, _, hparams = CASES[name]
  return fn(jnp.asarray(scores), jnp.asarray(labels), None if mask is None else jnp.asarray(mask), **hparams)


# ----------------------------------------------------------------------------- hand-computed values
def lse(*v):
  return math.log(sum(math.exp(x) for x in v))


HAND = [
    # s = [2, 1, 0], positive first: -log(e^2 / (e^2 + e + 1))
    (L.info_nce, [[2.0, 1.0, 0.0]], [[1, 0, 0]], {"temperature": 1.0}, math.log(1 + math.exp(-1) + math.exp(-2))),
    # temperature 0.5 doubles the scores
    (L.info_nce, [[2.0, 1.0, 0.0]], [[1, 0, 0]], {"temperature": 0.5}, math.log(1 + math.exp(-2) + math.exp(-4))),
    # rows: log(1 + e^-2) twice; columns [2, 1] -> log(1 + e^-1), [0, 3] -> log(1 + e^-3)
    (L.info_nce, [[2.0, 0.0], [1.0, 3.0]], [[1, 0], [0, 1]], {"temperature": 1.0, "symmetric": True},
     (math.log1p(math.exp(-2)) + (math.log1p(math.exp(-1)) + math.log1p(math.exp(-3))) / 2) / 2),
    # positives 2 and 1: (lse - 2) + (lse - 1)
    (L.joint_lh, [[2.0, 1.0, 0.0]], [[1, 1, 0]], {"temperature": 1.0}, 2 * lse(2, 1, 0) - 3),
    (L.sum_marg_lh, [[2.0, 1.0, 0.0]], [[1, 1, 0]], {"temperature": 1.0}, lse(2, 1, 0) - lse(2, 1)),
    # pairs (2, 0) and (1, 0): log(1 + e^-2 + e^-1)
    (L.lse_pair, [[2.0, 1.0, 0.0]], [[1, 1, 0]], {"temperature": 1.0}, math.log(1 + math.exp(-2) + math.exp(-1))),
    # student margins (2, 3), teacher margins (1, 1): (1 + 4) / 2
    (L.margin_mse, [[3.0, 1.0, 0.0]], [[2.0, 1.0, 1.0]], {}, 2.5),
    # q = (3/4, 1/4), p = (1/2, 1/2)
    (L.kl_distill, [[0.0, 0.0]], [[math.log(3), 0.0]], {}, 0.75 * math.log(1.5) + 0.25 * math.log(0.5)),
    # min_max: student (5, 7, 6) -> (0, 1, 1/2) (PyLate's normalize_scores), teacher uniform:
    # -log 3 - mean(s') + lse(s')
    (L.kl_distill, [[5.0, 7.0, 6.0]], [[0.0, 0.0, 0.0]], {"min_max": True}, -math.log(3) - 0.5 + lse(0, 1, 0.5)),
    (L.listnet, [[0.0, 0.0]], [[math.log(3), 0.0]], {}, math.log(2)),
    # p rows (1/2, 1/2), (3/4, 1/4); q rows (1/2, 1/2), (1/4, 3/4): only the means differ by (1/4, -1/4)
    (L.wasserstein, [[0.0, 0.0], [math.log(3), 0.0]], [[0.0, 0.0], [0.0, math.log(3)]], {}, 0.125),
    # ranks (1, 2, 3): pairs (0,1) w=1/3, (0,2) w=1/4, (1,2) w=1/5 of log(1 + e^{s_k - s_j})
    (L.weighted_ranknet, [[0.0, 1.0, 2.0]], [[1, 2, 3]], {},
     (math.log1p(math.e) / 3 + math.log1p(math.e ** 2) / 4 + math.log1p(math.e) / 5) / 3),
]


@pytest.mark.parametrize("fn,scores,labels,hparams,expected", HAND)
def test_hand_computed_values(fn, scores, labels, hparams, expected):
  value = fn(jnp.asarray(scores), jnp.asarray(labels, jnp.float32), **hparams)
  assert value.dtype == jnp.float32 and value.shape == ()
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_flops_hand_value():
  # column means of |w|: (2, 1) -> 4 + 1; the masked row is left out
  reps = jnp.asarray([[1.0, -2.0], [3.0, 0.0], [100.0, 100.0]])
  assert float(L.flops(reps, jnp.asarray([True, True, False]))) == pytest.approx(5.0)


def test_wasserstein_two_rows_closed_form():
  """With two rows, Sigma = d d^T / 2 (d = row difference), so
  W = |mu_x - mu_y|^2 + (|d_x|^2 + |d_y|^2 - 2 |d_x . d_y|) / 2."""
  scores = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
  grades = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
  x = np.exp([log_softmax(r) for r in scores])
  y = np.exp([log_softmax(r) for r in grades])
  dx, dy = x[0] - x[1], y[0] - y[1]
  expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + (dx @ dx + dy @ dy - 2 * abs(dx @ dy)) / 2
  np.testing.assert_allclose(float(L.wasserstein(jnp.asarray(scores), jnp.asarray(grades))), expected, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][1] is not None])
def test_matches_numpy_reference_with_mask(name):
  scores, labels = make_case(name, seed=1, shape=(5, 8))
  mask = np.random.default_rng(2).random(scores.shape) < 0.8
  mask[:, 0] = True
  if name == "info_nce_symmetric":
    mask[np.arange(5), np.arange(5)] = True
  ref = CASES[name][1](scores, labels, mask, **CASES[name][3])
  np.testing.assert_allclose(float(call(name, scores, labels, mask)), ref, rtol=2e-5, atol=1e-6)


def test_rand1_lh_picks_one_positive_uniformly():
  scores, labels = jnp.asarray([[2.0, 1.0, 0.0, -1.0]]), jnp.asarray([[1, 1, 0, 0]])
  first = math.log(1 + math.exp(-2) + math.exp(-3))   # positive 2, candidates {2, 0, -1}
  second = math.log(1 + math.exp(-1) + math.exp(-2))  # positive 1, candidates {1, 0, -1}
  values = [float(L.rand1_lh(scores, labels, key=k, temperature=1.0)) for k in jax.random.split(KEY, 400)]
  assert all(min(abs(v - first), abs(v - second)) < 1e-5 for v in values)
  assert 0.4 < np.mean([abs(v - second) < abs(v - first) for v in values]) < 0.6


# ----------------------------------------------------------------------------- gradients
def grad_and_central_differences(f, x, eps=1e-6):
  """jax.grad of f at x and its central-difference estimate, both in float64."""
  with jax.enable_x64(True):
    x = np.asarray(x, np.float64)
    grad = np.asarray(jax.grad(f)(jnp.asarray(x)))
    assert grad.dtype == np.float64
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      up, down = x.copy(), x.copy()
      up[idx] += eps
      down[idx] -= eps
      numeric[idx] = (float(f(jnp.asarray(up))) - float(f(jnp.asarray(down)))) / (2 * eps)
  return grad, numeric


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_central_differences(name):
  scores, labels = make_case(name, seed=3, shape=(3, 5), dtype=np.float64)
  mask = np.ones(scores.shape, bool)
  mask[1, 4] = False
  grad, numeric = grad_and_central_differences(lambda s: call(name, s, labels, mask), scores)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
  assert grad[1, 4] == 0.0


# ----------------------------------------------------------------------------- identities
def one_positive_case(seed=4):
  rng = np.random.default_rng(seed)
  scores = jnp.asarray(rng.normal(size=(6, 9)), jnp.float32)
  labels = jnp.asarray(np.eye(9)[rng.integers(0, 9, 6)], jnp.float32)
  return scores, labels


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_one_positive_losses_equal_info_nce(temperature):
  scores, labels = one_positive_case()
  ref = float(L.info_nce(scores, labels, temperature=temperature))
  for fn in (L.lse_pair, L.joint_lh, L.sum_marg_lh):
    np.testing.assert_allclose(float(fn(scores, labels, temperature=temperature)), ref, rtol=1e-5)
  for key in jax.random.split(KEY, 3):
    np.testing.assert_allclose(float(L.rand1_lh(scores, labels, key=key, temperature=temperature)), ref, rtol=1e-5)


def test_margin_mse_ignores_teacher_offsets():
  scores, teacher = make_case("margin_mse", seed=5)
  shifted = teacher + np.array([[3.0], [-7.0], [100.0], [0.5]], np.float32)
  np.testing.assert_allclose(float(L.margin_mse(jnp.asarray(scores), jnp.asarray(shifted))),
                             float(L.margin_mse(jnp.asarray(scores), jnp.asarray(teacher))), rtol=1e-4)


def test_margin_mse_positive_mask_generalises_column_zero():
  scores, teacher = make_case("margin_mse", seed=6)
  column0 = np.zeros(scores.shape[1], bool)
  column0[0] = True
  default = float(L.margin_mse(jnp.asarray(scores), jnp.asarray(teacher)))
  assert float(L.margin_mse(jnp.asarray(scores), jnp.asarray(teacher), positive_mask=column0)) == pytest.approx(default)
  several = np.zeros(scores.shape, bool)
  several[:, :2] = True
  np.testing.assert_allclose(float(L.margin_mse(jnp.asarray(scores), jnp.asarray(teacher), positive_mask=several)),
                             ref_margin_mse(scores, teacher, positive_mask=several), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_kl_is_zero_when_student_equals_teacher(temperature):
  scores, _ = make_case("kl_distill", seed=7)
  value = L.kl_distill(jnp.asarray(scores), jnp.asarray(scores), temperature=temperature, teacher_temperature=temperature)
  assert abs(float(value)) < 1e-6


def test_wasserstein_is_zero_when_predictions_equal_targets():
  _, grades = make_case("wasserstein", seed=8)
  assert abs(float(L.wasserstein(jnp.asarray(grades), jnp.asarray(grades)))) < 1e-6
  assert float(L.wasserstein(jnp.asarray(-grades), jnp.asarray(grades))) > 1e-3


# ----------------------------------------------------------------------------- masking
def padded(name, scores, labels):
  """Appends 3 masked candidate columns of garbage and, except for the symmetric loss (whose
  square block depends on B), one fully masked row of garbage."""
  garbage = np.array([np.nan, 1e30, -np.inf], np.float32)
  b, n = scores.shape
  s = np.concatenate([scores, np.tile(garbage, (b, 1))], 1)
  y = np.concatenate([labels, np.tile(np.array([1.0, np.nan, 2.0], np.float32), (b, 1))], 1)
  m = np.concatenate([np.ones((b, n), bool), np.zeros((b, 3), bool)], 1)
  if name != "info_nce_symmetric":
    s = np.concatenate([s, np.full((1, n + 3), np.inf, np.float32)])
    y = np.concatenate([y, np.ones((1, n + 3), np.float32)])
    m = np.concatenate([m, np.zeros((1, n + 3), bool)])
  return s, y, m


@pytest.mark.parametrize("name", list(CASES))
def test_masked_entries_change_nothing(name):
  scores, labels = make_case(name, seed=9)
  labels = stable(name, labels)
  value, grad = jax.value_and_grad(lambda s: call(name, s, labels))(jnp.asarray(scores))
  s, y, m = padded(name, scores, labels)
  value_p, grad_p = jax.value_and_grad(lambda s_: call(name, s_, y, m))(jnp.asarray(s))
  grad_p = np.asarray(grad_p)
  np.testing.assert_allclose(float(value_p), float(value), rtol=1e-6)
  np.testing.assert_allclose(grad_p[: scores.shape[0], : scores.shape[1]], np.asarray(grad), rtol=1e-5, atol=1e-7)
  assert np.all(grad_p[~m] == 0.0)


# ----------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_extreme_scores_stay_finite(name, dtype):
  _, labels = make_case(name, seed=10)
  signs = np.where(np.random.default_rng(11).random(labels.shape) < 0.5, -1.0, 1.0)
  scores = jnp.asarray(signs * 1e4, dtype)
  value, grad = jax.value_and_grad(lambda s: call(name, s, labels))(scores)
  assert value.dtype == jnp.float32
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_bfloat16_scores_are_computed_in_float32():
  scores, labels = make_case("info_nce", seed=12)
  low = jnp.asarray(scores, jnp.bfloat16)
  expected = ref_info_nce(np.asarray(low, np.float32), labels, temperature=0.5)
  np.testing.assert_allclose(float(call("info_nce", low, labels)), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- rows with nothing to learn
ROW_LOSSES = ["info_nce", "joint_lh", "sum_marg_lh", "lse_pair", "rand1_lh", "weighted_ranknet", "margin_mse"]


@pytest.mark.parametrize("name", ROW_LOSSES)
def test_row_without_positive_contributes_nothing(name):
  scores, labels = make_case(name, seed=13)
  labels = stable(name, labels)
  # no positive; for weighted RankNet, all ranks tied: no pair
  empty = np.full((1, scores.shape[1]), float(name == "weighted_ranknet"), np.float32)
  mask = np.ones((scores.shape[0] + 1, scores.shape[1]), bool)
  if name == "margin_mse":  # its positive is column 0: a row whose column 0 is masked has no pair
    mask[-1, 0] = False
  s = np.concatenate([scores, np.full((1, scores.shape[1]), 5.0, np.float32)])
  y = np.concatenate([labels, empty])
  value, grad = jax.value_and_grad(lambda s_: call(name, s_, y, mask))(jnp.asarray(s))
  np.testing.assert_allclose(float(value), float(call(name, scores, labels)), rtol=1e-6)
  assert np.all(np.asarray(grad)[-1] == 0.0)


@pytest.mark.parametrize("name", ROW_LOSSES)
def test_batch_without_positives_gives_zero(name):
  scores, _ = make_case(name, seed=14)
  labels = np.ones_like(scores) if name == "weighted_ranknet" else np.zeros_like(scores)
  mask = np.ones(scores.shape, bool)
  mask[:, 0] = name != "margin_mse"
  value, grad = jax.value_and_grad(lambda s: call(name, s, labels, mask))(jnp.asarray(scores))
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------- PyTorch and sentence-transformers
def test_info_nce_matches_torch_cross_entropy():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(15)
  scores = rng.normal(size=(8, 24)).astype(np.float32)
  targets = rng.integers(0, 24, 8)
  mask = rng.random((8, 24)) < 0.7
  mask[np.arange(8), targets] = True
  logits = torch.tensor(np.where(mask, scores, -np.inf) / 0.05)
  expected = torch.nn.functional.cross_entropy(logits, torch.tensor(targets)).item()
  value = L.info_nce(jnp.asarray(scores), jnp.asarray(np.eye(24)[targets]), jnp.asarray(mask), temperature=0.05)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def st_embeddings(torch, seed=16, batch=6, dim=16):
  generator = torch.Generator().manual_seed(seed)
  return [torch.randn(batch, dim, generator=generator) for _ in range(3)]


def cos_scores(queries, documents):
  q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  d = documents / np.linalg.norm(documents, axis=1, keepdims=True)
  return q @ d.T


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_matches_sentence_transformers_mnrl(symmetric):
  """scale 20 == temperature 0.05; candidates are [positives; hard negatives], query i's positive is column i."""
  torch = pytest.importorskip("torch")
  losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
  directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
  mnrl = losses.MultipleNegativesRankingLoss(None, scale=20.0, directions=directions, partition_mode="per_direction")
  q, p, n = st_embeddings(torch)
  expected = mnrl.compute_loss_from_embeddings([q, p, n], None).item()
  scores = cos_scores(q.numpy(), np.concatenate([p.numpy(), n.numpy()]))
  labels = np.eye(*scores.shape)
  value = L.info_nce(jnp.asarray(scores), jnp.asarray(labels), temperature=0.05, symmetric=symmetric)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_margin_mse_matches_sentence_transformers():
  torch = pytest.importorskip("torch")
  losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
  q, p, n = st_embeddings(torch, seed=17)
  n2 = torch.randn(q.shape, generator=torch.Generator().manual_seed(18))
  teacher = torch.randn(q.shape[0], 3, generator=torch.Generator().manual_seed(19)) * 4
  expected = losses.MarginMSELoss(None).compute_loss_from_embeddings([q, p, n, n2], teacher).item()
  scores = np.stack([np.sum(q.numpy() * d.numpy(), 1) for d in (p, n, n2)], 1)  # its default: dot product
  np.testing.assert_allclose(float(L.margin_mse(jnp.asarray(scores), jnp.asarray(teacher.numpy()))), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- FLOPS (representations, row mask)
def flops_case(seed=21):
  rng = np.random.default_rng(seed)
  reps = np.maximum(rng.normal(size=(5, 6)), 0) * 2 - 0.3
  mask = np.array([True, True, False, True, True])
  return reps, mask


def test_flops_matches_reference_and_finite_differences():
  reps, mask = flops_case()
  np.testing.assert_allclose(float(L.flops(jnp.asarray(reps, jnp.float32), jnp.asarray(mask))), ref_flops(reps, mask), rtol=1e-6)
  grad, numeric = grad_and_central_differences(lambda r: L.flops(r, mask), reps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
  assert np.all(grad[2] == 0.0)


def test_flops_masked_rows_change_nothing_and_extremes_stay_finite():
  reps, mask = flops_case()
  garbage = reps.copy()
  garbage[2] = [np.nan, np.inf, -np.inf, 1e30, 0.0, -1.0]
  value, grad = jax.value_and_grad(L.flops)(jnp.asarray(garbage, jnp.float32), jnp.asarray(mask))
  np.testing.assert_allclose(float(value), ref_flops(reps, mask), rtol=1e-6)
  assert np.all(np.asarray(grad)[2] == 0.0) and np.all(np.isfinite(np.asarray(grad)))
  for dtype in (jnp.float32, jnp.bfloat16):
    value, grad = jax.value_and_grad(L.flops)(jnp.asarray(np.sign(reps) * 1e4, dtype))
    assert value.dtype == jnp.float32 and np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float32)))


# ----------------------------------------------------------------------------- interface
def test_registry_and_jit():
  assert set(L.LOSSES) == {"info_nce", "joint_lh", "sum_marg_lh", "lse_pair", "rand1_lh", "margin_mse",
                           "kl_distill", "listnet", "wasserstein", "weighted_ranknet"}
  scores, labels = make_case("joint_lh", seed=20)
  for name, fn in L.LOSSES.items():
    loss = functools.partial(fn, key=KEY) if name == "rand1_lh" else fn
    eager = loss(jnp.asarray(scores), jnp.asarray(labels))
    np.testing.assert_allclose(float(jax.jit(loss)(scores, labels)), float(eager), rtol=1e-5)


def test_shape_mismatch_is_reported():
  with pytest.raises(ValueError, match="scores and labels"):
    L.info_nce(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="in-batch positives"):
    L.info_nce(jnp.zeros((4, 3)), jnp.zeros((4, 3)), symmetric=True)
