"""Tasks: what the train step optimises. A task owns its batch specification (what it `reads`,
its sides' length `buckets`, `collate`: samples → the arrays of one batch) and its loss (`terms`:
the module and a batch → the task's loss and the module's unweighted regularizer terms); the
pipeline and the step (step.py) stay generic. `for_model` picks the task by the protocol the
model's module meets.

- ranking (ranking.py): queries with candidates, in-batch negatives, GradCache; retrievers.
- pairs (pairs.py): (query, candidate) texts read jointly, [B, C] scores from score_pairs; rerankers.
- reconstruction (reconstruction.py): batches of texts; a module reconstructs a frozen model's
  activations (sparse autoencoders).
"""
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax

from ...errors import InputError
from ...models.kinds.protocols import ReconstructionModule, RerankerModule
from .. import objective
from .pairs import Pairs
from .ranking import Ranking
from .reconstruction import Reconstruction


@runtime_checkable
class Task(Protocol):
  name: ClassVar[str]
  reads: ClassVar[str]                   # "rows" (queries with candidates) or "documents"
  unpadded: ClassVar[tuple[str, ...]]    # the batch sides the module can run unpadded (pipeline.global_batch)

  def buckets(self, data_config, text) -> dict[str, tuple[int, ...]]: ...

  def collate(self, text, samples: list) -> dict: ...

  def terms(self, module, batch: dict, key: jax.Array, dropout) -> tuple[jax.Array, dict[str, Any]]: ...


TASKS = {task.name: task for task in (Ranking, Pairs, Reconstruction)}


def for_model(module, config, max_length: int | None) -> Task:
  """The task that trains `module`: reconstruction for a ReconstructionModule, pairs for a
  RerankerModule (joined pairs of up to `max_length` tokens), else ranking. A config key that
  does not apply to the task is an InputError."""
  if isinstance(module, (ReconstructionModule, RerankerModule)) and config.grad_cache_chunks:
    raise InputError("config.grad_cache_chunks", "GradCache applies to the ranking task of retrievers; "
                     f"this model trains on {'reconstruction' if isinstance(module, ReconstructionModule) else 'pairs'}")
  if isinstance(module, ReconstructionModule):
    return Reconstruction()
  loss = objective.loss_fn(config.loss)
  if isinstance(module, RerankerModule):
    if config.loss.in_batch_negatives:
      raise InputError("config.loss.in_batch_negatives", "a reranker reads each (query, candidate) pair jointly; "
                       "in-batch negatives do not apply: set it to false")
    return Pairs(loss, max_length)
  return Ranking(loss, config.loss.in_batch_negatives, config.grad_cache_chunks)
