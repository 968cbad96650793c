"""Training checkpoints: orbax CheckpointManager, asynchronous, keep-N, best-by-metric optional.

  <workdir>/retriever.json, <workdir>/tokenizer/   what retrax.load needs (written once)
  <workdir>/checkpoints/<step>/params              the backbone's parameters (pure dict)
                              /opt_state           optax state
                              /data                the grain iterator's state (JSON)
                              /config              the experiment config (JSON)

orbax writes each step into a temporary folder and renames it when complete, so a run
killed mid-save resumes from the last complete step. Restoring into a state built on
another mesh reshards it (8 devices → 1 and back).
"""
import json
import pathlib

import jax
import orbax.checkpoint as ocp

from .step import TrainState


class Checkpointer:

  def __init__(self, workdir, *, keep: int, best_metric: str | None = None, best_mode: str = "max"):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True,
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode)
    self.manager = ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints", options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, data_state: dict, config, metrics: dict | None = None) -> None:
    step = int(state.step)
    if step in self.manager.all_steps():
      return
    self.manager.save(step, metrics=metrics, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(json.loads(config.to_json()))))

  def restore(self, like: TrainState) -> tuple[TrainState, dict]:
    """The latest complete step, laid out with `like`'s shardings."""
    step = self.manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract.params),
        opt_state=ocp.args.StandardRestore(abstract.opt_state),
        data=ocp.args.JsonRestore()))
    state = TrainState(restored.params, restored.opt_state, jax.device_put(step, like.step.sharding))
    return state, restored.data

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
