"""Training losses: pure JAX functions of score matrices.

Every score loss has the signature `loss(scores[B, N], labels[B, N], mask[B, N] | None, **hparams)`
and returns a scalar. `scores` are the student's query x candidate scores, `labels` hold 1/0
(positives/negatives), grades, ranks or teacher scores, and `mask` marks the valid candidates
(None: all valid). Conventions shared by all of them:

- Losses are computed in float32 (float64 stays float64); bfloat16 scores are upcast first.
- `temperature` divides the scores before the formula; 1.0 means none.
- Masked entries are replaced before any arithmetic, so whatever they hold (NaN, inf) changes
  neither the value nor the gradients, and their own gradients are exactly 0.
- The result is the mean over the batch's valid rows unless a docstring says otherwise; a row
  with nothing to learn from (e.g. no valid positive) contributes nothing and is not counted.
  A batch without any valid row gives 0.
"""
import jax
import jax.numpy as jnp

# A finite fill for masked logits: exp(_NEG - max) is 0, and, unlike -inf, it never produces
# inf - inf = NaN in a fully masked row.
_NEG = -1e30


def _prepare(scores, labels, mask):
  """Upcasts to float32 (at least) and zeroes masked entries; returns (scores, labels, mask)."""
  if scores.ndim != 2 or scores.shape != labels.shape:
    raise ValueError(f"scores and labels must both be [B, N]; got {scores.shape} and {labels.shape}")
  dtype = jnp.promote_types(scores.dtype, jnp.float32)
  mask = jnp.ones(scores.shape, bool) if mask is None else jnp.asarray(mask, bool)
  if mask.shape != scores.shape:
    raise ValueError(f"mask must be [B, N] like scores {scores.shape}; got {mask.shape}")
  scores = jnp.where(mask, scores.astype(dtype), 0)
  labels = jnp.where(mask, jnp.asarray(labels).astype(dtype), 0)
  return scores, labels, mask


def _split(labels, mask):
  """Positives (label > 0) and negatives among the valid candidates."""
  positives = mask & (labels > 0)
  return positives, mask & ~positives


def _masked_sum(x, mask):
  return jnp.sum(jnp.where(mask, x, 0), axis=-1)


def _masked_logsumexp(x, mask):
  return jax.nn.logsumexp(jnp.where(mask, x, _NEG), axis=-1)


def _masked_log_softmax(x, mask):
  return jax.nn.log_softmax(jnp.where(mask, x, _NEG), axis=-1)


def _masked_softmax(x, mask):
  return jnp.where(mask, jnp.exp(_masked_log_softmax(x, mask)), 0)


def _row_mean(row_losses, rows):
  """Mean of the per-row losses over the rows marked valid."""
  return jnp.sum(jnp.where(rows, row_losses, 0)) / jnp.maximum(jnp.sum(rows), 1)


def _joint_nll(scores, positives, mask, temperature):
  """Per row: sum over positives p of -log softmax_mask(s / T)_p, and the number of positives."""
  log_probs = _masked_log_softmax(scores / temperature, mask)
  return -_masked_sum(log_probs, positives), jnp.sum(positives, axis=-1)


def _info_nce(scores, labels, mask, temperature):
  scores, labels, mask = _prepare(scores, labels, mask)
  positives, _ = _split(labels, mask)
  nll, count = _joint_nll(scores, positives, mask, temperature)
  return _row_mean(nll / jnp.maximum(count, 1), count > 0)


def info_nce(scores, labels, mask=None, temperature=0.05, symmetric=False):
  """InfoNCE / multiple-negatives ranking loss (van den Oord et al. 2018).

  loss_i = -log softmax_{A_i}(s_i / T)_{p_i}, A_i the valid candidates of row i, p_i its positive;
  mean over rows with a positive. Labels are one-hot; should a row hold several positives, its
  loss is the mean of their terms (joint_lh / |P|). In-batch negatives are just extra columns.
  T = 0.05 is sentence-transformers' MultipleNegativesRankingLoss scale 20.

  symmetric=True averages this with the document->query loss of the square block s[:, :B]
  (the B in-batch positives, one per query, at the start of the candidate axis):
    loss = (L(s, y, m) + L(s[:, :B]^T, y[:, :B]^T, m[:, :B]^T)) / 2,
  i.e. document j is scored against the B queries and its positive query is the one whose label
  marks column j (query j in the usual layout). Columns beyond B (hard negatives) take no part
  in the reverse direction. This is sentence-transformers' MultipleNegativesRankingLoss with
  directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction".
  """
  loss = _info_nce(scores, labels, mask, temperature)
  if not symmetric:
    return loss
  b = scores.shape[0]
  if scores.shape[1] < b:
    raise ValueError(f"symmetric InfoNCE needs the B={b} in-batch positives as its first columns; "
                     f"got scores {scores.shape}")
  reverse_mask = None if mask is None else jnp.asarray(mask)[:, :b].T
  reverse = _info_nce(scores[:, :b].T, jnp.asarray(labels)[:, :b].T, reverse_mask, temperature)
  return (loss + reverse) / 2


def joint_lh(scores, labels, mask=None, temperature=0.05):
  """Joint likelihood (JointLH) of "Training Dense Retrievers with Multiple Positive Passages"
  (Wang et al. 2026, arXiv:2602.12727).

  loss_i = sum_{p in P} -log softmax_A(s / T)_p, summed (not averaged) over the row's positives
  as in the paper; mean over rows with a positive. P: positives (label > 0), A: valid candidates.
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  positives, _ = _split(labels, mask)
  nll, count = _joint_nll(scores, positives, mask, temperature)
  return _row_mean(nll, count > 0)


def sum_marg_lh(scores, labels, mask=None, temperature=0.05):
  """Summed marginal likelihood (SumMargLH), Wang et al. 2026 (arXiv:2602.12727).

  loss_i = -log sum_{p in P} softmax_A(s / T)_p = lse_A(s / T) - lse_P(s / T);
  mean over rows with a positive.
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  positives, _ = _split(labels, mask)
  x = scores / temperature
  row_losses = _masked_logsumexp(x, mask) - _masked_logsumexp(x, positives)
  return _row_mean(row_losses, positives.any(axis=-1))


def lse_pair(scores, labels, mask=None, temperature=0.05):
  """Log-sum-exp pairwise loss (LSEPair), Wang et al. 2026 (arXiv:2602.12727).

  loss_i = log(1 + sum_{p in P} sum_{n in N} exp((s_n - s_p) / T))
         = softplus(lse_N(s / T) + lse_P(-s / T)),
  N the valid negatives; O(N) memory, no pair matrix. Mean over rows with a positive
  (a row without negatives gives 0).
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  positives, negatives = _split(labels, mask)
  x = scores / temperature
  row_losses = jax.nn.softplus(_masked_logsumexp(x, negatives) + _masked_logsumexp(-x, positives))
  return _row_mean(row_losses, positives.any(axis=-1))


def rand1_lh(scores, labels, mask=None, *, key, temperature=0.05):
  """Random single positive (Rand1LH), Wang et al. 2026 (arXiv:2602.12727).

  Per row, one positive p ~ Uniform(P) is drawn with `key`; the other positives leave the
  candidate set, and loss_i = -log softmax_{{p} u N}(s / T)_p. Mean over rows with a positive.
  The draw depends on the key and on the shape of the matrix.
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  positives, negatives = _split(labels, mask)
  choice = jax.random.categorical(key, jnp.where(positives, 0.0, _NEG), axis=-1)
  kept = positives & (jnp.arange(scores.shape[1]) == choice[:, None])
  return _info_nce(scores, kept, negatives | kept, temperature)


def margin_mse(scores, labels, mask=None, positive_mask=None):
  """MarginMSE of Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
  Cross-Architecture Knowledge Distillation"; `labels` are the teacher's scores t.

  loss_i = mean over pairs (p, n) in P x N of ((s_p - s_n) - (t_p - t_n))^2
         = Var_P(d) + mean_N (d_n - mean_P d)^2,   d = s - t,
  the second form needing no pair matrix. P = positive_mask & mask, positive_mask being [B, N]
  or [N]; None means column 0 (the (query, positive, negatives...) format of MarginMSE data).
  N = the other valid candidates. Each row averages its own pairs, then mean over rows with a
  pair (= sentence-transformers' MarginMSELoss when every row has the same pairs).
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  if positive_mask is None:
    positive_mask = jnp.arange(scores.shape[1]) == 0
  positives = mask & jnp.asarray(positive_mask, bool)
  negatives = mask & ~positives
  d = scores - labels
  n_pos, n_neg = jnp.sum(positives, axis=-1), jnp.sum(negatives, axis=-1)
  center = _masked_sum(d, positives) / jnp.maximum(n_pos, 1)
  squares = (d - center[:, None]) ** 2
  row_losses = (_masked_sum(squares, positives) / jnp.maximum(n_pos, 1)
                + _masked_sum(squares, negatives) / jnp.maximum(n_neg, 1))
  return _row_mean(row_losses, (n_pos > 0) & (n_neg > 0))


def _listwise(scores, labels, mask, temperature, teacher_temperature):
  """Student log-probabilities, teacher log-probabilities and probabilities over valid candidates."""
  scores, labels, mask = _prepare(scores, labels, mask)
  log_p = _masked_log_softmax(scores / temperature, mask)
  log_q = _masked_log_softmax(labels / teacher_temperature, mask)
  return log_p, log_q, jnp.exp(log_q), mask


def _min_max(scores, mask):
  """Each row mapped to (s - min) / (max - min + 1e-8) over its valid entries."""
  low = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1, keepdims=True)
  high = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
  return jnp.where(mask, (scores - low) / (high - low + 1e-8), 0)


def kl_distill(scores, labels, mask=None, temperature=1.0, teacher_temperature=1.0, min_max=False):
  """Listwise distillation: KL(q || p) = sum_i q_i (log q_i - log p_i) over valid candidates,
  q = softmax(t / T_t) (teacher scores t = labels), p = softmax(s / T) (Hinton et al. 2015).

  min_max: the student's scores are first min-max normalised per row, s <- (s - min) / (max - min
  + 1e-8) over the valid candidates (PyLate's Distillation, normalize_scores=True). Mean over rows
  with a valid candidate.
  """
  if min_max:
    scores, labels, mask = _prepare(scores, labels, mask)
    scores = _min_max(scores, mask)
  log_p, log_q, q, mask = _listwise(scores, labels, mask, temperature, teacher_temperature)
  return _row_mean(_masked_sum(q * (log_q - log_p), mask), mask.any(axis=-1))


def listnet(scores, labels, mask=None, temperature=1.0):
  """ListNet (Cao et al. 2007), top-one probabilities:
  loss_i = -sum_j softmax(y)_j log softmax(s / T)_j over valid candidates, y = labels.

  Mean over rows with a valid candidate. (= kl_distill + entropy of softmax(y).)
  """
  log_p, _, q, mask = _listwise(scores, labels, mask, temperature, 1.0)
  return _row_mean(-_masked_sum(q * log_p, mask), mask.any(axis=-1))


def _center(x, rows):
  """Row mean over the valid rows, and the rows minus it (zero for invalid rows)."""
  mean = jnp.sum(jnp.where(rows[:, None], x, 0), axis=0) / jnp.maximum(jnp.sum(rows), 1)
  return mean, jnp.where(rows[:, None], x - mean, 0)


def wasserstein(scores, labels, mask=None, temperature=1.0):
  """2-Wasserstein loss of SyCL: Esfandiarpoor et al. 2025, "Beyond Contrastive Learning:
  Synthetic Data Enables List-wise Training with Multiple Levels of Relevance" (EMNLP Findings;
  code: the `ws2` loss of github.com/BatsResearch/sycl, built on trove).

  Rows are samples of N-dimensional vectors: predictions x_i = softmax(s_i / T) and targets
  y_i = softmax(g_i) of the graded labels g (no temperature), both over valid candidates.
  Fitting a Gaussian to each set across the batch (mean mu, covariance Sigma = E^T E / (n - 1),
  E the centred rows, n valid rows) gives the closed-form W2^2 between the two Gaussians:
    W = ||mu_x - mu_y||^2 + Tr(Sigma_x) + Tr(Sigma_y) - 2 Tr((Sigma_x^1/2 Sigma_y Sigma_x^1/2)^1/2),
  where the last trace is the nuclear norm of E_x E_y^T / (n - 1) (a [B, B] SVD).
  It is NOT a per-row 1-D earth mover's distance: the value is one statistic of the whole
  batch, not a mean over rows. Rows without a valid candidate are left out of it.
  """
  scores, labels, mask = _prepare(scores, labels, mask)
  rows = mask.any(axis=-1)
  mu_x, e_x = _center(_masked_softmax(scores / temperature, mask), rows)
  mu_y, e_y = _center(_masked_softmax(labels, mask), rows)
  scale = 1 / jnp.maximum(jnp.sum(rows) - 1, 1)
  cross = jnp.matmul(e_x, e_y.T, precision=jax.lax.Precision.HIGHEST) * scale
  nuclear = jnp.sum(jnp.linalg.svd(cross, compute_uv=False))
  return jnp.sum((mu_x - mu_y) ** 2) + scale * (jnp.sum(e_x ** 2) + jnp.sum(e_y ** 2)) - 2 * nuclear


def weighted_ranknet(scores, labels, mask=None):
  """Weighted RankNet of FIRST (Reddy et al. 2024, "FIRST: Faster Improved Listwise Reranking
  with Single Token Decoding"; `rank_net(weighted=True)` in github.com/gangiswag/llm-reranker).

  labels are 1-based ranks r (1 = best). Over the pairs Q_i = {(j, k) valid: r_j < r_k}:
    loss_i = (1 / |Q_i|) sum_{(j, k) in Q_i} log(1 + exp(-(s_j - s_k))) / (r_j + r_k),
  i.e. FIRST's weighted BCE-with-logits averaged over the pair count (not the weight sum);
  tied ranks form no pair. Mean over rows with a pair. Memory is O(B N^2).
  """
  scores, ranks, mask = _prepare(scores, labels, mask)
  pairs = mask[:, :, None] & mask[:, None, :] & (ranks[:, :, None] < ranks[:, None, :])
  weights = jnp.where(pairs, 1 / (ranks[:, :, None] + ranks[:, None, :]), 0)
  pair_losses = weights * jax.nn.softplus(scores[:, None, :] - scores[:, :, None])
  n_pairs = jnp.sum(pairs, axis=(1, 2))
  row_losses = jnp.sum(jnp.where(pairs, pair_losses, 0), axis=(1, 2)) / jnp.maximum(n_pairs, 1)
  return _row_mean(row_losses, n_pairs > 0)


def flops(representations, mask=None):
  """FLOPS regulariser (Paria et al. 2020, used by SPLADE): sum_j (mean_i |w_ij|)^2 over a batch
  of sparse representations w [B, V]; the mean runs over the valid rows (mask [B]).
  """
  dtype = jnp.promote_types(representations.dtype, jnp.float32)
  rows = jnp.ones(representations.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
  weights = jnp.abs(jnp.where(rows[:, None], representations.astype(dtype), 0))
  return jnp.sum((jnp.sum(weights, axis=0) / jnp.maximum(jnp.sum(rows), 1)) ** 2)


LOSSES = {
    "info_nce": info_nce,
    "joint_lh": joint_lh,
    "sum_marg_lh": sum_marg_lh,
    "lse_pair": lse_pair,
    "rand1_lh": rand1_lh,
    "margin_mse": margin_mse,
    "kl_distill": kl_distill,
    "listnet": listnet,
    "wasserstein": wasserstein,
    "weighted_ranknet": weighted_ranknet,
}
