"""Training metrics: `<workdir>/metrics.jsonl` (one object per logged step) and TensorBoard events.

TensorBoard's own event writer (the one torch.utils.tensorboard uses) needs no TensorFlow.
Only process 0 writes. Appending keeps the log of a resumed run whole; lines from steps
after the resumed checkpoint (logged before a crash, never checkpointed) are dropped first.
"""
import json
import pathlib
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class MetricWriter:

  def __init__(self, workdir, *, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    if self.path.exists():
      kept = [l for l in self.path.read_text().splitlines() if l and json.loads(l)["step"] <= resume_step]
      self.path.write_text("".join(l + "\n" for l in kept))
    self.events = EventFileWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in metrics.items()}
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **values}) + "\n")
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self.events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def close(self) -> None:
    if self.enabled:
      self.events.close()
