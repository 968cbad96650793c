"""Tasks: what the train step optimises. A task owns its batch specification (`collate`: samples
→ the arrays of one batch) and its loss (`terms`: the module and a batch → the task's loss and
the module's unweighted regularizer terms); the step (step.py) stays generic.

- ranking (ranking.py): queries with candidates, in-batch negatives, GradCache; retrievers.
- pairs (pairs.py): (query, candidate) texts read jointly, [B, C] scores from score_pairs; rerankers.
- reconstruction (reconstruction.py): batches of texts; a module reconstructs a frozen model's
  activations (sparse autoencoders).
"""
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax

from .pairs import Pairs
from .ranking import Ranking
from .reconstruction import Reconstruction


@runtime_checkable
class Task(Protocol):
  name: ClassVar[str]

  def collate(self, text, samples: list) -> dict: ...

  def terms(self, module, batch: dict, key: jax.Array, dropout) -> tuple[jax.Array, dict[str, Any]]: ...


TASKS = {task.name: task for task in (Ranking, Pairs, Reconstruction)}
