"""Files and folders written whole or not at all (written beside the target, then renamed onto
it), and JSON files read with errors that name the file and line."""
import contextlib
import json
import os
import pathlib
import shutil
import tempfile

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path):
  """A temporary path beside `path` (mode 0666 less the umask) that is renamed onto it on success
  and removed on failure, so `path` is never half-written."""
  path = pathlib.Path(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
  except OSError as error:
    raise InputError(path, f"cannot write this file: {error.strerror} ({path.parent})") from None
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


def write_atomic(path, text: str | bytes) -> None:
  """Writes `text` (or bytes) to `path` through atomic_path."""
  with atomic_path(path) as tmp:
    if isinstance(text, bytes):
      pathlib.Path(tmp).write_bytes(text)
    else:
      pathlib.Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_directory(path, *, replace: bool = True):
  """Yields a new folder `<path>.partial-<pid>` that becomes `path` when the block succeeds and is
  removed when it raises, so `path` never holds a half-written folder and no partial one is left.
  A `path` that is a file, or a parent that cannot be written, is an InputError.

  replace=False keeps a `path` that appeared meanwhile (another process wrote it first) and
  drops the new folder.
  """
  path = check_folder(path)
  partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
  shutil.rmtree(partial, ignore_errors=True)
  try:
    partial.mkdir(parents=True)
  except OSError as error:
    raise InputError(path, f"cannot write this folder: {error.strerror} ({error.filename})") from None
  try:
    yield partial
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if replace:
    shutil.rmtree(path, ignore_errors=True)
  try:
    os.rename(partial, path)
  except OSError:
    shutil.rmtree(partial, ignore_errors=True)
    if replace or not path.is_dir():
      raise


def check_folder(path) -> pathlib.Path:
  """`path` as a Path; an InputError when it exists and is not a folder."""
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise InputError(path, "expected a folder (or a path to create one), found a file")
  return path


def read_json(path, kind=dict):
  """The JSON value in `path`, which must be a `kind` (dict: an object, list: an array)."""
  path = pathlib.Path(path)
  try:
    value = json.loads(path.read_text())
  except FileNotFoundError:
    raise InputError(path, "no such file") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(path, f"invalid JSON: {getattr(e, 'msg', e)}", line=getattr(e, "lineno", None)) from None
  if not isinstance(value, kind):
    raise InputError(path, f"expected a JSON {'object' if kind is dict else 'array'}, got {type(value).__name__}")
  return value
