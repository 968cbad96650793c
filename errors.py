"""The one error type for bad input: it names the file, the line and what was expected."""


class InputError(ValueError):
  """Bad input at a known place; str() reads `path:line: message`."""

  def __init__(self, path, message, line=None):
    self.path = str(path)
    self.line = line
    where = self.path if line is None else f"{self.path}:{line}"
    super().__init__(f"{where}: {message}")
