"""Files written whole or not at all: a temporary file beside the target, renamed onto it."""
import contextlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_path(path):
  """A temporary path beside `path` (mode 0666 less the umask) that is renamed onto it on success
  and removed on failure, so `path` is never half-written."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_atomic(path, text: str) -> None:
  """Writes `text` to `path` through atomic_path."""
  with atomic_path(path) as tmp:
    pathlib.Path(tmp).write_text(text)
