"""python -m retrax.eval --config configs/eval.py [--config.KEY=VALUE ...] --workdir OUT"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ..errors import InputError
from .driver import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an evaluation config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for results.json and run.trec.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    results = evaluate(_CONFIG.value, _WORKDIR.value)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  width = max(len(k) for k in results)
  for name, value in results.items():
    print(f"{name:<{width}}  {value:.4f}")


if __name__ == "__main__":
  app.run(main)
