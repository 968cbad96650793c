"""The pairs task: B queries with C candidates each, every (query, candidate) read jointly by a
reranker's score_pairs(tokens) → [B, C], under a configured loss (objective.loss_fn: InfoNCE
over the candidates, MarginMSE against teacher scores, listwise losses).

Batch: pair_ids, pair_mask, pair_type_ids [B, C, L] (the tokenizer's pair template: token type 0
for the query's segment, 1 for the candidate's); labels, candidate_mask [B, C].
"""
import dataclasses
from typing import Callable, ClassVar

import jax.numpy as jnp
import numpy as np

from ..batching import default_buckets


@dataclasses.dataclass(frozen=True)
class Pairs:
  name: ClassVar[str] = "pairs"
  reads: ClassVar[str] = "rows"
  unpadded: ClassVar[tuple[str, ...]] = ()
  loss: Callable              # objective.loss_fn(config.loss), without in-batch negatives
  max_length: int             # of a joined pair
  truncation: str = "longest_first"

  def buckets(self, data_config, text) -> dict[str, tuple[int, ...]]:
    del data_config, text
    return {"pair": default_buckets(self.max_length)}

  def collate(self, text, samples: list[dict]) -> dict:
    """Samples (pipeline.Pipeline.sample: a query, its candidates' texts, labels) → one batch."""
    b = len(samples)
    queries = [s["query"] for s in samples for _ in s["docs"]]
    ids, mask, types = text.tokenize_pairs(queries, [t for s in samples for t in s["docs"]], self.max_length,
                                           self.truncation)
    shaped = lambda x: x.reshape(b, -1, x.shape[-1])
    return {"pair_ids": shaped(ids), "pair_mask": shaped(mask), "pair_type_ids": shaped(types),
            **{k: np.stack([s[k] for s in samples]) for k in ("labels", "candidate_mask")}}

  def terms(self, module, batch, key, dropout):
    """(loss of score_pairs' [B, C] scores, no regularizers)."""
    tokens = {"input_ids": batch["pair_ids"], "attention_mask": batch["pair_mask"],
              "token_type_ids": batch["pair_type_ids"]}
    scores = module.score_pairs(tokens, dropout=dropout).astype(jnp.float32)
    return self.loss(scores, batch["labels"], batch["candidate_mask"], key), {}
