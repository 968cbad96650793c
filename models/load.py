"""retrax.load(path): a Hugging Face model folder, or a retrax checkpoint, to a retriever; `random`
for a randomly initialised one."""
import pathlib

import jax.numpy as jnp

from .. import checks
from ..errors import InputError
from . import checkpoint
from .dense import DenseRetriever

DTYPES = ("float32", "bfloat16", "float16")


def _dtype_name(dtype) -> str:
  try:
    return jnp.dtype(dtype).name
  except TypeError:
    return str(dtype)


def load(path, **kwargs) -> DenseRetriever:
  """kwargs: `dtype` (the compute dtype: float32, bfloat16 or float16), and SentenceConfig
  overrides (pooling, normalize, max_length, prompts)."""
  if "dtype" in kwargs:
    checks.choice(_dtype_name(kwargs["dtype"]), "dtype", DTYPES)
  path = pathlib.Path(path)
  if checkpoint.is_checkpoint(path):
    return checkpoint.load(path, **kwargs)
  if (path / "config.json").is_file():
    return DenseRetriever.from_pretrained(path, **kwargs)
  raise InputError(path, "expected a Hugging Face model folder (config.json + weights) or a retrax checkpoint "
                   f"({checkpoint.MANIFEST})")


def random(hf_config: dict, tokenizer, settings, *, seed: int = 0, dtype=jnp.float32) -> DenseRetriever:
  """A retriever whose backbone, of a config.json-style dict, is randomly initialised."""
  return DenseRetriever.random(hf_config, tokenizer, settings, seed=seed, dtype=dtype)
