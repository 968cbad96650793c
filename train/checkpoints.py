"""Training checkpoints: orbax CheckpointManager, asynchronous, keep-N, best-by-metric optional.

  <workdir>/checkpoints/<step>/params      the module's parameters (pure dict)
                              /model_state the module's other variables, when it has any
                              /opt_state   optax state
                              /data        the grain iterator's state (JSON)
                              /config      the experiment config (JSON)

orbax writes each step into a temporary folder and renames it when complete, so a run
killed mid-save resumes from the last complete step. A step that cannot be read (random
bytes in its files, a stray folder) is skipped with a warning and renamed to
`<step>.unreadable-<time>`, so the run saves that step again; nothing is deleted. Restoring
into a state built on another mesh reshards it (8 devices → 1 and back). Nothing is written
before the first save.
"""
import json
import logging
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ..models.checkpoint import restore_newest
from .step import TrainState


class Checkpointer:

  def __init__(self, workdir, *, keep: int, best_metric: str | None = None, best_mode: str = "max"):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=False, enable_async_checkpointing=True,
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode)
    self.directory = workdir.checkpoints
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def saved_config(self) -> tuple[int, dict] | None:
    """(step, config) of the newest step whose saved config reads; None when nothing is saved.

    Unreadable steps are skipped quietly here: restore() skips them again, with the warning."""
    steps = self.steps()
    if not steps:
      return None
    step, restored, _ = restore_newest(
        steps, lambda s: self.manager.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore())),
        self.directory, warn=False)
    return step, restored.config

  def save(self, state: TrainState, data_state: dict, config, metrics: dict | None = None) -> None:
    step = int(state.step)
    if step in self.manager.all_steps():
      return
    self.manager.save(step, metrics=metrics, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        **({"model_state": ocp.args.StandardSave(state.model_state)} if state.model_state else {}),
        opt_state=ocp.args.StandardSave(state.opt_state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(json.loads(config.to_json()))))

  def restore(self, like: TrainState) -> tuple[TrainState, dict]:
    """The newest readable step, laid out with `like`'s shardings; newer unreadable steps are set aside."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)

    def read(step):
      return self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract.params),
          **({"model_state": ocp.args.StandardRestore(abstract.model_state)} if like.model_state else {}),
          opt_state=ocp.args.StandardRestore(abstract.opt_state),
          data=ocp.args.JsonRestore()))
    step, restored, skipped = restore_newest(self.steps(), read, self.directory)
    if jax.process_count() > 1:
      multihost_utils.assert_equal(step, "hosts restored different checkpoint steps")
    if skipped:
      self._set_aside(skipped)
    state = TrainState(restored.params, restored.opt_state, jax.device_put(step, like.step.sharding),
                       restored.model_state if like.model_state else {})
    return state, restored.data

  def _set_aside(self, steps) -> None:
    """Renames unreadable step folders out of orbax's sight (process 0), so their steps save again."""
    if jax.process_index() == 0:
      stamp = time.strftime("%Y%m%d-%H%M%S")
      for step in steps:
        target = self.directory / f"{step}.unreadable-{stamp}"
        (self.directory / str(step)).rename(target)
        logging.warning("set the unreadable step %d aside as %s", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints set aside")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
