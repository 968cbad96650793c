"""Command-line entry points: absl flags with a config file, bad input reported in one line.

A misspelt or ill-typed `--config.KEY=VALUE`, or a ReportedError from the run (bad input,
divergence), prints `error: …` on stderr and exits with status 1, without a traceback.
"""
import sys

from absl import app, flags, logging

from .errors import ReportedError


def _fail(message) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # config_flags' override errors
    _fail("bad --config override: " + " ".join(str(e).replace("\\n", " ").replace("\\'", "").strip("'").split()))


def run(main, config_flag) -> None:
  """app.run(main), with a config file that does not load, or a ReportedError from main, reported as one line."""
  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      config_flag.value.keys()  # config_flags defers a file's load error to the config's first use
    except OSError as e:
      _fail(" ".join(str(e).split()))
    try:
      main(argv[1:])
    except ReportedError as e:
      _fail(e)
  app.run(guarded, flags_parser=_parse)
