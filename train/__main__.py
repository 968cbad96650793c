"""python -m retrax.train --config configs/<experiment>.py --workdir DIR [--config.KEY=VALUE ...]"""
from absl import flags
from ml_collections import config_flags

from .. import cli
from ..xla_cpu import with_host_memory
from .trainer import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics.jsonl and TensorBoard events.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  with_host_memory()  # on XLA:CPU alone: its step buffers kept mapped between steps, in 2 MiB pages
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main, _CONFIG)
