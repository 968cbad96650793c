"""retrax.load(path): a Hugging Face model folder, or a retrax checkpoint, to a retriever (or a
reranker, for a reranker kind: models/hosts.py); `random` for a randomly initialised one."""

import jax.numpy as jnp
from flax import nnx

from .. import checks
from ..errors import InputError
from ..files import as_path
from ..workdirs import MANIFEST
from . import checkpoint, kinds
from .backbones import hf
from .host_model import HostModel, read_tokenizer, tokenizer_files
from .hosts import host_for

DTYPES = ("float32", "bfloat16", "float16")


def _dtype_name(dtype) -> str:
  try:
    return jnp.dtype(dtype).name
  except TypeError:
    return str(dtype)


def load(path, *, kind: str | None = None, dtype=jnp.float32, **overrides) -> HostModel:
  """`kind`: the registry name to read a Hugging Face folder as (None: the kind its files show,
  models/kinds); a checkpoint names its own. `dtype`: the compute dtype (float32, bfloat16 or
  float16). Other keywords override the kind's settings (dense: pooling, normalize, max_length,
  prompts)."""
  checks.choice(_dtype_name(dtype), "dtype", DTYPES)
  path = as_path(path)
  if checkpoint.is_checkpoint(path):
    return checkpoint.load(path, kind=kind, dtype=dtype, **overrides)
  if (path / "config.json").is_file():
    return from_pretrained(path, kinds.get(kind, "kind") if kind else kinds.for_folder(path), dtype=dtype,
                           **overrides)
  raise InputError(path, "expected a Hugging Face model folder (config.json + weights) or a retrax checkpoint "
                   f"({MANIFEST})")


def from_pretrained(folder, kind: type, *, dtype=jnp.float32, **overrides) -> HostModel:
  """A Hugging Face (sentence-transformers, …) folder read as `kind`."""
  folder = as_path(folder)
  kinds.settings_of(kind, overrides)
  _, backbone = hf.load_backbone(folder, dtype=dtype)
  if not (folder / "tokenizer.json").is_file():
    raise InputError(folder, "expected tokenizer.json (a fast tokenizer) beside config.json")
  module, tokenizer = kind.from_folder(backbone, read_tokenizer(folder / "tokenizer.json"), folder, **overrides)
  return host_for(module, tokenizer, tokenizer_files=tokenizer_files(folder), source=folder)


def random(hf_config: dict, tokenizer, settings, *, kind: str = kinds.DEFAULT, seed: int = 0,
           dtype=jnp.float32, data=None) -> HostModel:
  """A retriever of `kind` whose backbone, of a config.json-style dict, is randomly initialised;
  `data`, a sample of training texts, goes to the kind's create (which may initialise from it)."""
  config_cls, model_cls, _, _ = hf.architecture(hf_config, "config.model.random")
  backbone = model_cls(config_cls.from_hf(hf_config), dtype=dtype, rngs=nnx.Rngs(seed))
  module, tokenizer = kinds.get(kind).create(backbone, tokenizer, settings, data=data)
  return host_for(module, tokenizer, source="config.model.random")
