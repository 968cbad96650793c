"""Command-line entry points: absl flags with a config file, bad input reported in one line.

A config file that does not load, a misspelt or ill-typed `--config.KEY=VALUE`, a ReportedError
from the run (bad input, divergence) or a file the system refuses (a read-only or full disk)
prints `error: …` on stderr and exits with status 1, without a traceback. Ctrl-C prints
`interrupted` and exits with status 130; every file retrax writes is written atomically, so
nothing half-written is left.
"""
import sys

from absl import app, flags, logging

from .errors import ReportedError


def _fail(message, status=1) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def _one_line(error) -> str:
  return " ".join(str(error).replace("\\n", " ").replace("\\'", "").strip("'").split())


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(e)
  except OSError as e:  # config_flags loads the file here when an override follows it
    _fail(_one_line(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # config_flags' override errors
    _fail("bad --config override: " + _one_line(e))


def run(main, config_flag) -> None:
  """app.run(main), with a config file that does not load, a ReportedError, a refused file or Ctrl-C as one line."""
  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      config_flag.value.keys()  # config_flags defers a file's load error to the config's first use
    except OSError as e:
      _fail(_one_line(e))
    try:
      main(argv[1:])
    except ReportedError as e:
      _fail(e)
    except KeyboardInterrupt:
      _fail("interrupted", status=130)
    except OSError as e:
      if e.filename is None or e.strerror is None:
        raise
      _fail(f"{e.filename}: {e.strerror}")
  app.run(guarded, flags_parser=_parse)
