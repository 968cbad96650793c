"""What trains: a regular expression over parameter paths (config.model.trainable).

A parameter trains when its '/'-joined path in the retriever module's parameter tree
(`backbone/layers/5/mlp_in/kernel`) matches the pattern whole (re.fullmatch): ".*" trains
everything, "backbone/layers/5/.*" only the last of six layers, and "(?!backbone/).*" the heads
alone, so a frozen backbone is one line. The train step differentiates the trainable
part alone, the optimizer keeps state for it alone, and the frozen part passes through.
"""
import re

from ..errors import InputError

EVERYTHING = ".*"


def compile_pattern(pattern: str, where: str = "config.model.trainable") -> re.Pattern:
  try:
    return re.compile(pattern)
  except (re.error, TypeError) as e:
    raise InputError(where, f"{pattern!r} is not a regular expression ({e})") from None


def paths(params: dict, prefix: str = "") -> list[str]:
  """Every leaf's '/'-joined path, in the tree's order."""
  out = []
  for key, value in params.items():
    path = f"{prefix}{key}"
    out += paths(value, path + "/") if isinstance(value, dict) else [path]
  return out


def split(params: dict, pattern: str) -> tuple[dict, dict]:
  """(trainable, frozen): nested dicts of the leaves whose path matches `pattern`, and of the rest."""
  regex = compile_pattern(pattern)

  def parts(tree, prefix):
    trainable, frozen = {}, {}
    for key, value in tree.items():
      path = f"{prefix}{key}"
      if isinstance(value, dict):
        t, f = parts(value, path + "/")
        trainable.update({key: t} if t else {})
        frozen.update({key: f} if f else {})
      elif regex.fullmatch(path):
        trainable[key] = value
      else:
        frozen[key] = value
    return trainable, frozen
  return parts(params, "")


def combine(trainable: dict, frozen: dict) -> dict:
  """The whole tree again: split's inverse."""
  out = dict(frozen)
  for key, value in trainable.items():
    out[key] = combine(value, frozen.get(key, {})) if isinstance(value, dict) else value
  return out


def check(params: dict, pattern: str) -> None:
  """An InputError when `pattern` trains no parameter, with examples of the paths there are."""
  regex = compile_pattern(pattern)
  every = paths(params)
  if not any(regex.fullmatch(p) for p in every):
    raise InputError("config.model.trainable", f"{pattern!r} matches no parameter path; they look like "
                     f"{', '.join(every[:3])}, …, {every[-1]}")
