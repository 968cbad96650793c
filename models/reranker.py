"""The host-side reranker: a reranker kind's module (score_pairs, no index) with its tokenizer.

`predict(pairs)` gives one raw score per (query, document) pair, in the caller's order;
`rank(query, documents)` sorts documents by it (sentence-transformers' CrossEncoder.rank: a list
of {"corpus_id", "score"}, best first). Pairs are joined by the tokenizer's pair template,
truncated to the kind's max_length (settings.max_length; `truncation` longest_first or
only_second), sorted by length and padded to fixed buckets, so the jitted scorer compiles
once per bucket.
"""
import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from .. import checks, ops
from ..errors import InputError
from .host_model import HostModel
from .text import check_texts


class Reranker(HostModel):

  def __init__(self, module, tokenizer, *, tokenizer_files: dict | None = None, source="model"):
    super().__init__(module, tokenizer, tokenizer_files=tokenizer_files, source=source)
    self._score_batch = ops.jit(self.score_tokens)

  @property
  def max_length(self) -> int:
    return self.settings.max_length

  def score_tokens(self, params, tokens: dict):
    """[n] scores of n joined pairs [n, L], a pure function of `params` (what predict jits)."""
    return nnx.merge(self.graphdef, params).score_pairs(jax.tree.map(lambda x: x[:, None], tokens))[:, 0]

  def predict(self, pairs, batch_size: int = 32, show_progress_bar: bool = False,
              truncation: str = "longest_first") -> np.ndarray:
    """float32 [n] raw scores of (query, document) pairs."""
    pairs = list(pairs)
    if any(not isinstance(p, (tuple, list)) or len(p) != 2 for p in pairs):
      bad = next(i for i, p in enumerate(pairs) if not isinstance(p, (tuple, list)) or len(p) != 2)
      raise InputError("pairs", f"item {bad} is {type(pairs[bad]).__name__} {pairs[bad]!r:.60}, expected a "
                                "(query, document) pair of strings")
    queries, documents = check_texts([q for q, _ in pairs]), check_texts([d for _, d in pairs])
    batch_size = checks.integer(batch_size, "batch_size", low=1)
    scores = np.zeros(len(pairs), np.float32)
    batches = self.text.pair_batches(queries, documents, self.max_length, batch_size, truncation)
    total = -(-len(pairs) // batch_size)
    for b in tqdm(batches, total=total, disable=not show_progress_bar, desc="rerank", unit="batch"):
      tokens = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "token_type_ids": b.token_type_ids}
      out = np.asarray(self._score_batch(self.params, tokens), np.float32)[:len(b.rows)]
      if not np.isfinite(out).all():
        raise InputError(self.source, "non-finite scores: the parameters hold NaN or inf (a diverged checkpoint?)")
      scores[b.rows] = out
    return scores

  def rank(self, query: str, documents, top_k: int | None = None, return_documents: bool = False,
           batch_size: int = 32) -> list[dict]:
    """The documents by score, best first (ties in input order): [{"corpus_id": i, "score": s(, "text")}]."""
    documents = check_texts(documents)
    scores = self.predict([(query, d) for d in documents], batch_size)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
            for i in order]
