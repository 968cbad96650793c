"""Errors that the command line reports as one line (`error: …`, exit status 1), never as a traceback."""


class ReportedError(Exception):
  """Base of the errors that carry a complete one-line message for the user."""


class InputError(ReportedError, ValueError):
  """Bad input at a known place; str() reads `path:line: message`."""

  def __init__(self, path, message, line=None):
    self.path = str(path)
    self.line = line
    where = self.path if line is None else f"{self.path}:{line}"
    super().__init__(f"{where}: {message}")


class Diverged(ReportedError, FloatingPointError):
  """Training met a non-finite loss, gradient norm or parameter; str() names the step and the value."""
