"""The registry of retriever kinds: config.model.kind, checkpoint manifests, retrax.load and export
find a kind's module class here by its name, and know nothing else about it."""
import dataclasses

from ...errors import InputError
from ...files import as_path
from ..backbones import hf
from .colbert import ColBERT
from .dense import Dense

KINDS = {kind.name: kind for kind in (ColBERT, Dense)}  # for_folder asks them in this order
DEFAULT = Dense.name


def get(name: str, source="config.model.kind") -> type:
  """The module class of kind `name`; an unknown name is an InputError naming `source`."""
  if name not in KINDS:
    raise InputError(source, f"kind {name!r} is not one of {sorted(KINDS)}")
  return KINDS[name]


def settings_of(kind: type, overrides: dict, prefix: str = "") -> dict:
  """`overrides` of `kind`'s settings, checked: a key the kind lacks is an InputError naming its settings."""
  names = [f.name for f in dataclasses.fields(kind.Settings)]
  unknown = sorted(set(overrides) - set(names))
  if unknown:
    raise InputError(f"{prefix}{unknown[0]}", f"not a setting of the {kind.name!r} kind; its settings are "
                                              f"{', '.join(names)}")
  return overrides


def for_folder(folder) -> type:
  """The first kind whose files the model folder holds (PyLate's config: colbert; an encoder alone:
  dense); a task head that no kind runs is an InputError naming it."""
  kind = next((kind for kind in KINDS.values() if kind.claims(folder)), None)
  if kind is None:
    name, description = hf.task_head(folder)
    raise InputError(as_path(folder) / "config.json",
                     f"holds {description} ({name}), which no retrax kind runs (kinds: {', '.join(sorted(KINDS))}); "
                     "to use its encoder alone, name a kind (retrax.load(path, kind='dense'), config.model.kind)")
  return kind
