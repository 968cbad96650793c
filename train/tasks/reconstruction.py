"""The reconstruction task: batches of texts, no pairs. A module holding a frozen model reads
its activations x [N, d] with weights w [N] (1 for a real token, 0 for padding), reconstructs
them, and the loss is the weighted mean squared error summed over features:

  L = Σ_n w_n ‖x_n − x̂_n‖² / Σ_n w_n

(the MSE of SAELens and dictionary_learning: Σ over d, mean over tokens), plus the module's
regularizers (an SAE's L1 or AuxK terms), which the step weights by config.regularizers.
No gradient reaches the frozen model: x is taken under stop_gradient.

Batch: text_ids, text_mask [B, L]: the corpus's documents through the text path's document side.
"""
import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ..batching import default_buckets


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  name: ClassVar[str] = "reconstruction"
  reads: ClassVar[str] = "documents"
  unpadded: ClassVar[tuple[str, ...]] = ()

  @staticmethod
  def buckets(data_config, text) -> dict[str, tuple[int, ...]]:
    del text
    return {"text": tuple(data_config.get("doc_buckets") or default_buckets(data_config.doc_max_len))}

  @staticmethod
  def collate(text, samples: list[str]) -> dict:
    ids, mask = text.tokenize(samples, "document")
    return {"text_ids": ids, "text_mask": mask}

  @staticmethod
  def terms(module, batch, key, dropout):
    """(the weighted MSE, the module's regularizers); the frozen model runs without dropout."""
    del key, dropout
    x, weights = module.activations({"input_ids": batch["text_ids"], "attention_mask": batch["text_mask"]})
    x = jax.lax.stop_gradient(x.astype(jnp.float32))
    reconstruction, regularizers = module.reconstruct(x)
    weights = weights.astype(jnp.float32)
    error = ((x - reconstruction.astype(jnp.float32)) ** 2).sum(-1)
    return (error * weights).sum() / jnp.maximum(weights.sum(), 1.0), regularizers
