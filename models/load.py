"""retrax.load(path): a Hugging Face model folder, or a retrax checkpoint, to a retriever."""
import pathlib

from ..errors import InputError
from . import checkpoint
from .dense import DenseRetriever


def load(path, **kwargs) -> DenseRetriever:
  """kwargs: `dtype`, and SentenceConfig overrides (pooling, normalize, max_length, prompts)."""
  path = pathlib.Path(path)
  if checkpoint.is_checkpoint(path):
    return checkpoint.load(path, **kwargs)
  if (path / "config.json").is_file():
    return DenseRetriever.from_pretrained(path, **kwargs)
  raise InputError(path, "expected a Hugging Face model folder (config.json + weights) or a retrax checkpoint "
                   f"({checkpoint.MANIFEST})")
