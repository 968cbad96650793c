"""A retrax retriever checkpoint: one folder that `retrax.load` restores (laid out in workdirs.py).
In a training workdir, the newest readable step is loaded.

The manifest (retriever.json, format 3) describes the module by parts, so that a model may hold
a backbone and a head, or a frozen retriever and a sparse autoencoder, each part rebuilt by its
own entry:

  {"format": 3, "kind": K, "settings": {…K's settings},
   "parts": {name: {"architecture": {…a config.json}}                         a backbone
                  | {"kind": K', "settings": {…}, "parts": {…}}}}              a kind's module

A kind's module names its parts (`parts()`: the backbone alone by default) and is rebuilt from
them (`from_parts(parts, settings)`); the parameters of every part are one orbax tree, keyed by
the parts' names. Format 2 ({"kind", "backbone", "settings"}) reads as one backbone part; format
1 (before kinds) also held the backbone's parameters alone. Both load as before.

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
from .host_model import HostModel, read_tokenizer
from .hosts import host_for
from .kinds.protocols import HostKind

FORMAT = 3
READS = (1, 2, FORMAT)


def is_checkpoint(path) -> bool:
  return Checkpoint(path).manifest.is_file()


def write_manifest(model: HostModel, directory) -> None:
  """tokenizer/ and retriever.json, each file written atomically, retriever.json last."""
  folder = Checkpoint(directory)
  folder.tokenizer.mkdir(parents=True, exist_ok=True)
  for name, data in model.tokenizer_files.items():
    write_atomic(folder.tokenizer / name, data)
  manifest = {"format": FORMAT, **describe(model.module)}
  write_atomic(folder.manifest, json.dumps(manifest, indent=2))


def describe(module) -> dict:
  """A kind's module as a manifest entry: its kind, settings and parts, recursively."""
  parts = {name: describe(part) if isinstance(part, HostKind) else {"architecture": part.config.to_hf()}
           for name, part in module.parts().items()}
  return {"kind": module.name, "settings": dataclasses.asdict(module.settings), "parts": parts}


def build(entry: dict, dtype, where, overrides: dict | None = None):
  """The module a manifest entry describes, with fresh parameters; `overrides` of its kind's settings."""
  if "kind" not in entry:
    config_cls, model_cls, _, _ = hf.architecture(entry.get("architecture"), where)
    try:
      return model_cls(config_cls.from_hf(entry["architecture"]), dtype=dtype, rngs=nnx.Rngs(0))
    except (KeyError, TypeError, ValueError) as e:
      raise InputError(where, f"unsupported or incomplete manifest: {e}") from None
  kind_cls = kinds.get(entry["kind"], where)
  kinds.settings_of(kind_cls, overrides or {})
  if not isinstance(entry.get("settings"), dict) or not isinstance(entry.get("parts"), dict):
    raise InputError(where, f"the {entry['kind']!r} entry needs 'settings' and 'parts' objects")
  parts = {name: build(part, dtype, where) for name, part in entry["parts"].items()}
  try:
    settings = dataclasses.replace(kind_cls.Settings(**entry["settings"]), **(overrides or {}))
    return kind_cls.from_parts(parts, settings)
  except (KeyError, TypeError, ValueError) as e:
    raise InputError(where, f"unsupported or incomplete manifest: {e}") from None


def save(model, directory) -> None:
  """params/, model_state/ (when the module has variables beyond its parameters), tokenizer/ and the manifest."""
  with atomic_directory(directory) as partial:
    params, other = nnx.state(model.module, nnx.Param, nnx.Not(nnx.Param))
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(Checkpoint(partial).params, nnx.to_pure_dict(params))
      if nnx.to_pure_dict(other):
        ckptr.save(Checkpoint(partial).model_state, nnx.to_pure_dict(other))
    write_manifest(model, partial)


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


def _read(checkpointer, folder, target):
  _quiet_echoes_of(folder)
  try:
    return checkpointer.restore(folder, target)
  except Exception as e:  # as in restore_newest
    raise InputError(folder, f"cannot be read ({_reason(e)})") from None


def saved_steps(checkpoints: epath.Path) -> list[int]:
  """The step folders under `checkpoints` (names that are integers; orbax's temporary ones are not)."""
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []


def read_manifest(path: epath.Path) -> dict:
  """retriever.json, checked (a known kind and format), in format 3's layout."""
  manifest = read_json(path)
  kinds.get(manifest.get("kind"), path)
  if manifest.get("format", 1) not in READS:
    raise InputError(path, f"format {manifest['format']!r}: this retrax reads formats "
                           f"{', '.join(map(str, READS[:-1]))} and {FORMAT}")
  if manifest.get("format", 1) < 3:
    for key in ("backbone", "settings"):
      if not isinstance(manifest.get(key), dict):
        raise InputError(path, f"expected a {key!r} object")
    manifest = {**manifest, "parts": {"backbone": {"architecture": manifest.pop("backbone")}}}
  return manifest


def load(directory, *, kind: str | None = None, dtype="float32", **overrides) -> HostModel:
  """The model (a retriever or a reranker) a checkpoint folder or training workdir holds; `kind`, if
  given, must be its kind."""
  folder = Checkpoint(directory)
  manifest = read_manifest(folder.manifest)
  if kind not in (None, manifest["kind"]):
    raise InputError(folder.manifest, f"holds a {manifest['kind']!r} retriever, not {kind!r}")
  module = build(manifest, dtype, folder.manifest, overrides)
  state = nnx.state(module, nnx.Param)
  saved = state["backbone"] if manifest.get("format", 1) == 1 else state  # format 1: the backbone's alone
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(saved))
  other = nnx.state(module, nnx.Not(nnx.Param))
  with ocp.StandardCheckpointer() as ckptr:
    if folder.params.is_dir():
      restored, other_folder = _read(ckptr, folder.params, target), folder.model_state
    else:
      step, restored, _ = restore_newest(saved_steps(folder.checkpoints),
                                         lambda step: ckptr.restore(folder.step_params(step), target),
                                         folder.checkpoints)
      other_folder = folder.step_model_state(step)
    if nnx.to_pure_dict(other) and other_folder.is_dir():
      nnx.replace_by_pure_dict(other, _read(ckptr, other_folder, jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                                               nnx.to_pure_dict(other))))
      nnx.update(module, other)
  nnx.replace_by_pure_dict(saved, restored)
  nnx.update(module, state)
  tokenizer_dir = folder.tokenizer
  if not (tokenizer_dir / "tokenizer.json").is_file():
    raise InputError(tokenizer_dir, "expected tokenizer.json, written beside retriever.json")
  files = {p.name: p.read_bytes() for p in tokenizer_dir.iterdir() if p.is_file()}
  return host_for(module, read_tokenizer(tokenizer_dir / "tokenizer.json"), tokenizer_files=files,
                   source=folder.root)
