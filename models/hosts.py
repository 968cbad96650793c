"""The host-side model for a kind's module: a `Reranker` for a module that scores pairs
(protocols.RerankerModule), else a `Retriever`."""
from .kinds.protocols import RerankerModule
from .reranker import Reranker
from .retriever import Retriever


def host_for(module, tokenizer, **kwargs):
  return (Reranker if isinstance(module, RerankerModule) else Retriever)(module, tokenizer, **kwargs)
