"""Training metrics: `<workdir>/metrics.jsonl` (one object per logged step) and TensorBoard events.

TensorBoard's own event writer (the one torch.utils.tensorboard uses) needs no TensorFlow.
Only process 0 writes. On Cloud Storage, whose objects cannot be appended to, each logged step
rewrites metrics.jsonl whole (one upload). Every line is strict JSON (a non-finite value is an error, never a
bare NaN). Appending keeps the log of a resumed run whole: on resume, lines from steps after
the restored checkpoint (logged before a crash, never checkpointed) and a line torn by a
kill during an append are dropped, with a warning, and the file is rewritten atomically.
"""
import json
import logging
import time

from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from ..files import is_remote, write_atomic


def _step(line: str) -> int | None:
  """The step of a metrics line, or None when the line is not a whole JSON object with one."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return None
  return row.get("step") if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def kept_lines(path: epath.Path, resume_step: int) -> list[str]:
  """The lines of `path` up to `resume_step`; unreadable lines are dropped with a warning naming them."""
  kept = []
  for lineno, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
    step = _step(line)
    if step is None:
      if line.strip():
        logging.warning("%s:%d: dropped a line that is not a whole metrics object (torn by a kill?)", path, lineno)
    elif step <= resume_step:
      kept.append(line)
  return kept


class MetricWriter:

  def __init__(self, workdir, *, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    self.path = workdir.metrics
    self.lines = kept_lines(self.path, resume_step) if self.path.exists() else []
    if self.path.exists():
      self._rewrite()
    self.events = EventFileWriter(str(workdir.tensorboard))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in metrics.items()}
    line = json.dumps({"step": step, **values}, allow_nan=False)
    self.lines.append(line)
    if is_remote(self.path):  # an object cannot be appended to
      self._rewrite()
    else:
      with self.path.open("a") as f:
        f.write(line + "\n")
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self.events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def _rewrite(self) -> None:
    write_atomic(self.path, "".join(line + "\n" for line in self.lines))

  def close(self) -> None:
    if self.enabled:
      self.events.close()
