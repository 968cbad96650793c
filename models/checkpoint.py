"""A retrax retriever checkpoint: one folder that `retrax.load` restores (laid out in workdirs.py).
In a training workdir, the newest readable step is loaded.

Format 1 (before kinds) held dense retrievers whose params were the backbone's alone; they load
as before.

Saved through files.atomic_directory, so an interrupted save leaves no checkpoint behind.
A training step that cannot be read (a torn write, random bytes, a stray folder) is skipped
with a warning naming it, and the next older step is loaded.
"""
import dataclasses
import json
import logging
import sys

from etils import epath
import jax
import orbax.checkpoint as ocp
from flax import nnx

from ..errors import InputError
from ..files import atomic_directory, read_json, write_atomic
from ..workdirs import Checkpoint
from . import kinds
from .backbones import hf
from .host_model import read_tokenizer
from .hosts import host_for
from .retriever import Retriever

FORMAT = 2


def is_checkpoint(path) -> bool:
  return Checkpoint(path).manifest.is_file()


def write_manifest(retriever: Retriever, directory) -> None:
  """tokenizer/ and retriever.json, each file written atomically, retriever.json last."""
  folder = Checkpoint(directory)
  folder.tokenizer.mkdir(parents=True, exist_ok=True)
  for name, data in retriever.tokenizer_files.items():
    write_atomic(folder.tokenizer / name, data)
  manifest = {"kind": retriever.kind.name, "format": FORMAT, "backbone": retriever.backbone_config.to_hf(),
              "settings": dataclasses.asdict(retriever.settings)}
  write_atomic(folder.manifest, json.dumps(manifest, indent=2))


def save(retriever: Retriever, directory) -> None:
  with atomic_directory(directory) as partial:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(Checkpoint(partial).params, nnx.to_pure_dict(nnx.state(retriever.module, nnx.Param)))
    write_manifest(retriever, partial)


class _EchoesOfFailedReads(logging.Filter):
  """Drops asyncio's '… exception was never retrieved' records that name a folder already reported unreadable."""

  def __init__(self):
    super().__init__()
    self.folders = set()

  def filter(self, record):
    text = record.getMessage()
    return not ("exception was never retrieved" in text and any(f in text for f in self.folders))


_ECHOES = _EchoesOfFailedReads()


def _quiet_echoes_of(folder) -> None:
  """Called before reading `folder`. When a read fails (and is reported), the reads still in
  flight end as noise: tensorstore's callbacks land on orbax's closed event loop ('RuntimeError:
  Event loop is closed', through sys.unraisablehook, possibly before the failure is even caught),
  and asyncio logs the failed sibling reads of `folder` when they are collected. Those are
  dropped; every other unraisable and record passes on."""
  _ECHOES.folders.add(str(folder))
  if _ECHOES in logging.getLogger("asyncio").filters:
    return
  logging.getLogger("asyncio").addFilter(_ECHOES)
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)
  sys.unraisablehook = hook


def _reason(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= 200 else text[:200] + " …"


def restore_newest(steps, restore, where, warn: bool = True) -> tuple[int, object, list[int]]:
  """(step, restore(step), steps skipped) for the newest step that `restore` reads.

  Each step that raises is skipped, with a warning naming it unless `warn` is False; when none
  can be read, an InputError names `where` and every step's reason.
  """
  _quiet_echoes_of(where)
  failures = []
  for step in sorted(steps, reverse=True):
    try:
      return step, restore(step), [s for s, _ in failures]
    except Exception as e:  # orbax and tensorstore raise many kinds for a torn or corrupt step
      failures.append((step, _reason(e)))
      if warn:
        logging.warning("%s: skipping checkpoint step %d, which cannot be read (%s)", where, step, failures[-1][1])
  detail = "; ".join(f"step {s}: {r}" for s, r in failures) or "no step saved"
  raise InputError(where, f"no readable checkpoint ({detail})")


def saved_steps(checkpoints: epath.Path) -> list[int]:
  """The step folders under `checkpoints` (names that are integers; orbax's temporary ones are not)."""
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []


def read_manifest(path: epath.Path) -> dict:
  """retriever.json, checked: a known kind and format, backbone and settings objects."""
  manifest = read_json(path)
  kinds.get(manifest.get("kind"), path)
  if manifest.get("format", 1) not in (1, FORMAT):
    raise InputError(path, f"format {manifest['format']!r}: this retrax reads formats 1 and {FORMAT}")
  for key in ("backbone", "settings"):
    if not isinstance(manifest.get(key), dict):
      raise InputError(path, f"expected a {key!r} object")
  return manifest


def load(directory, *, kind: str | None = None, dtype="float32", **overrides) -> Retriever:
  """The retriever a checkpoint folder or training workdir holds; `kind`, if given, must be its kind."""
  folder = Checkpoint(directory)
  manifest = read_manifest(folder.manifest)
  if kind not in (None, manifest["kind"]):
    raise InputError(folder.manifest, f"holds a {manifest['kind']!r} retriever, not {kind!r}")
  kind_cls = kinds.get(manifest["kind"], folder.manifest)
  config_cls, model_cls, _, _ = hf.architecture(manifest["backbone"], folder.manifest)
  kinds.settings_of(kind_cls, overrides)
  try:
    config = config_cls.from_hf(manifest["backbone"])
    settings = dataclasses.replace(kind_cls.Settings(**manifest["settings"]), **overrides)
  except (KeyError, TypeError, ValueError) as e:
    raise InputError(folder.manifest, f"unsupported or incomplete manifest: {e}") from None
  module = kind_cls(model_cls(config, dtype=dtype, rngs=nnx.Rngs(0)), settings)
  state = nnx.state(module, nnx.Param)
  saved = state["backbone"] if manifest.get("format", 1) == 1 else state  # format 1: the backbone's alone
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(saved))
  with ocp.StandardCheckpointer() as ckptr:
    if folder.params.is_dir():
      _quiet_echoes_of(folder.params)
      try:
        restored = ckptr.restore(folder.params, target)
      except Exception as e:  # as in restore_newest
        raise InputError(folder.params, f"cannot be read ({_reason(e)})") from None
    else:
      _, restored, _ = restore_newest(saved_steps(folder.checkpoints),
                                      lambda step: ckptr.restore(folder.step_params(step), target),
                                      folder.checkpoints)
  nnx.replace_by_pure_dict(saved, restored)
  nnx.update(module, state)
  tokenizer_dir = folder.tokenizer
  if not (tokenizer_dir / "tokenizer.json").is_file():
    raise InputError(tokenizer_dir, "expected tokenizer.json, written beside retriever.json")
  files = {p.name: p.read_bytes() for p in tokenizer_dir.iterdir() if p.is_file()}
  return host_for(module, read_tokenizer(tokenizer_dir / "tokenizer.json"), tokenizer_files=files,
                   source=folder.root)
