"""python -m retrax.eval --config configs/eval.py [--config.KEY=VALUE ...] --workdir OUT"""
import json

from absl import flags
from ml_collections import config_flags

from .. import cli
from ..workdirs import EvalWorkdir
from .driver import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an evaluation config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for results.json and run.trec.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  results = evaluate(_CONFIG.value, _WORKDIR.value)
  width = max(len(k) for k in results)
  if not _CONFIG.value.rerank.model:
    for name, value in results.items():
      print(f"{name:<{width}}  {value:.4f}")
    return
  first = json.loads(EvalWorkdir(_WORKDIR.value).first_stage_results.read_text())
  print(f"{'':<{width}}  {'first':>8}  {'reranked':>8}")
  for name, value in results.items():
    print(f"{name:<{width}}  {first[name]:>8.4f}  {value:>8.4f}")


if __name__ == "__main__":
  cli.run(main, _CONFIG)
