"""The registry of retriever kinds: config.model.kind, checkpoint manifests, retrax.load and export
find a kind's module class here by its name, and know nothing else about it."""
from ...errors import InputError
from .colbert import ColBERT
from .dense import Dense

KINDS = {kind.name: kind for kind in (ColBERT, Dense)}  # for_folder asks them in this order
DEFAULT = Dense.name


def get(name: str, source="config.model.kind") -> type:
  """The module class of kind `name`; an unknown name is an InputError naming `source`."""
  if name not in KINDS:
    raise InputError(source, f"kind {name!r} is not one of {sorted(KINDS)}")
  return KINDS[name]


def for_folder(folder) -> type:
  """The first kind whose files the model folder holds (PyLate's config: colbert; else dense)."""
  return next(kind for kind in KINDS.values() if kind.claims(folder))
