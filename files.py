"""Paths on any filesystem, and files and folders written whole or not at all.

Every path a user passes (a workdir, a model, data, an index) goes through `as_path()`, an
`etils.epath.Path`: a local path, or `gs://bucket/…` on Cloud Storage (through gcsfs).

STORAGE_EMULATOR_HOST=http://HOST:PORT, the variable Google's own clients honour, sends every
gs:// read and write to that endpoint, with anonymous credentials as those clients use there:
gcsfs reads the variable itself, and tensorstore (orbax's arrays) is given it as
TENSORSTORE_GCS_HTTP_URL with a placeholder token.

Whole or not at all:
- a local file is written beside its target and renamed onto it;
- a Cloud Storage object appears only when its upload completes, so a file there is written
  locally and uploaded in one request;
- a local folder is written as `<path>.partial-<pid>` and renamed;
- a folder on Cloud Storage (which has no rename) is written locally, then uploaded file by
  file, its top-level JSON files (a checkpoint's retriever.json, which `retrax.load` looks for)
  last, so a reader never takes a half-uploaded folder for a whole one.
"""
import contextlib
import functools
import json
import os
import pathlib
import shutil
import tempfile

from etils import epath

from .errors import InputError

REMOTE_PREFIXES = ("gs://", "s3://", "az://")


@functools.cache
def _configure_cloud_storage() -> None:
  """gcsfs lists afresh each time (orbax's arrays are written by tensorstore, behind gcsfs' back);
  with STORAGE_EMULATOR_HOST, everything points at the emulator."""
  import fsspec  # pylint: disable=import-outside-toplevel
  gcs = fsspec.config.conf.setdefault("gcs", {})
  gcs["use_listings_cache"] = False
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  if host:
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", host if "://" in host else f"http://{host}")
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # its gRPC bucket probe: not emulated
    gcs["token"] = "anon"


def as_path(p) -> epath.Path:
  """`p` (a str or path, local or gs://) as an epath.Path; local ones made absolute."""
  if is_remote(p):
    _configure_cloud_storage()
    return epath.Path(p)
  return epath.Path(os.path.abspath(os.fspath(p)))


def is_remote(p) -> bool:
  return os.fspath(p).startswith(REMOTE_PREFIXES)


@contextlib.contextmanager
def atomic_path(target):
  """A local temporary file path (mode 0666 less the umask) that becomes `target` on success,
  by a rename beside it or one upload, and is removed on failure, so `target` is never half-written."""
  target = as_path(target)
  if is_remote(target):
    with tempfile.TemporaryDirectory() as scratch:
      tmp = os.path.join(scratch, target.name)
      yield tmp
      _upload(pathlib.Path(tmp), target)
    return
  try:
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
  except OSError as error:
    raise InputError(target, f"cannot write this file: {error.strerror} ({target.parent})") from None
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    yield tmp
    os.replace(tmp, target)
  except BaseException:
    os.unlink(tmp)
    raise


def write_atomic(target, text: str | bytes) -> None:
  """Writes `text` (or bytes) to `target` through atomic_path."""
  with atomic_path(target) as tmp:
    if isinstance(text, bytes):
      pathlib.Path(tmp).write_bytes(text)
    else:
      pathlib.Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_directory(target, *, replace: bool = True):
  """Yields a new local folder that becomes `target` when the block succeeds and is removed when
  it raises, so `target` never holds a half-written folder and no partial one is left. A `target`
  that is a file, or a parent that cannot be written, is an InputError.

  replace=False keeps a `target` that appeared meanwhile (another process wrote it first) and
  drops the new folder.
  """
  target = check_folder(target)
  if is_remote(target):
    with tempfile.TemporaryDirectory() as scratch:
      yield epath.Path(scratch)
      if target.exists() and not replace:
        return
      if target.exists():
        target.rmtree()
      _upload_folder(pathlib.Path(scratch), target)
    return
  partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
  shutil.rmtree(partial, ignore_errors=True)
  try:
    partial.mkdir(parents=True)
  except OSError as error:
    raise InputError(target, f"cannot write this folder: {error.strerror} ({error.filename})") from None
  try:
    yield partial
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if replace:
    shutil.rmtree(target, ignore_errors=True)
  try:
    os.rename(partial, target)
  except OSError:
    shutil.rmtree(partial, ignore_errors=True)
    if replace or not target.is_dir():
      raise


def _upload(local: pathlib.Path, target: epath.Path) -> None:
  target.write_bytes(local.read_bytes())


def _upload_folder(local: pathlib.Path, target: epath.Path) -> None:
  """Every file under `local`, nested ones first and top-level JSON files last."""
  files = sorted((p for p in local.rglob("*") if p.is_file()),
                 key=lambda p: (p.parent == local, p.suffix == ".json", str(p)))
  for file in files:
    _upload(file, target / file.relative_to(local).as_posix())


def remove_tree(target) -> None:
  """Removes the folder `target` and everything under it, as far as it can."""
  with contextlib.suppress(OSError):
    as_path(target).rmtree(missing_ok=True)


@contextlib.contextmanager
def local_copy(source):
  """A local path holding `source` (a file or folder): itself when local, a downloaded copy when remote."""
  source = as_path(source)
  if not is_remote(source):
    yield pathlib.Path(source)
    return
  with tempfile.TemporaryDirectory() as scratch:
    local = pathlib.Path(scratch) / source.name
    if source.is_dir():
      for file in _files_under(source):
        dest = local / os.path.relpath(os.fspath(file), os.fspath(source))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(file.read_bytes())
    else:
      local.write_bytes(source.read_bytes())
    yield local


def _files_under(folder: epath.Path):
  """Every file below `folder`, one listing per folder (epath refuses `**` on object stores)."""
  for entry in folder.iterdir():
    if entry.is_dir():
      yield from _files_under(entry)
    else:
      yield entry


def check_folder(p) -> epath.Path:
  """`p` as a path; an InputError when it exists and is not a folder."""
  p = as_path(p)
  if p.exists() and not p.is_dir():
    raise InputError(p, "expected a folder (or a path to create one), found a file")
  return p


def read_json(p, kind=dict):
  """The JSON value in `p`, which must be a `kind` (dict: an object, list: an array)."""
  p = as_path(p)
  try:
    value = json.loads(p.read_text())
  except FileNotFoundError:
    raise InputError(p, "no such file") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(p, f"invalid JSON: {getattr(e, 'msg', e)}", line=getattr(e, "lineno", None)) from None
  if not isinstance(value, kind):
    raise InputError(p, f"expected a JSON {'object' if kind is dict else 'array'}, got {type(value).__name__}")
  return value
