"""retrax: JAX/Flax neural information retrieval."""


def load(path, **kwargs):
  """A retriever from a Hugging Face folder or a retrax checkpoint (see retrax.models.load)."""
  from .models.load import load as _load
  return _load(path, **kwargs)
