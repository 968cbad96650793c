"""Stanford ColBERT folders (stanford-futuredata/ColBERT's `HF_ColBERT`; REFERENCES.md A1, A4):

  config.json         architectures ["HF_ColBERT"], the backbone's config
  model.safetensors   the backbone under `bert.` (or pytorch_model.bin), and `linear.weight` [dim, hidden], no bias
  artifact.metadata   query_token_id / doc_token_id (default "[unused0]" / "[unused1]"), query_maxlen,
                      doc_maxlen, attend_to_mask_tokens, mask_punctuation

Read as PyLate reads them: the markers inserted after [CLS], queries expanded with [MASK]; lengths
absent from the metadata take PyLate's defaults (32, 180).
"""

from ..errors import InputError
from ..files import as_path, read_json
from .heads.projection import Layer


def claims(folder) -> bool:
  path = as_path(folder) / "config.json"
  return path.is_file() and (read_json(path).get("architectures") or [None])[0] == "HF_ColBERT"


def read(folder, tokenizer, backbone_config):
  """(ColBERTConfig fields, (the linear projection,), its weights)."""
  del tokenizer
  from .backbones.hf import read_weights
  folder = as_path(folder)
  path = folder / "artifact.metadata"
  metadata = read_json(path) if path.is_file() else {}
  settings = {"query_prefix": metadata.get("query_token_id", "[unused0]"),
              "document_prefix": metadata.get("doc_token_id", "[unused1]")}
  for ours, theirs in (("query_length", "query_maxlen"), ("document_length", "doc_maxlen"),
                       ("attend_to_expansion_tokens", "attend_to_mask_tokens")):
    if metadata.get(theirs) is not None:
      settings[ours] = metadata[theirs]
  if metadata.get("mask_punctuation", True) is False:
    settings["skiplist_words"] = ()
  weights = read_weights(folder)
  if "linear.weight" not in weights:
    raise InputError(folder, "a Stanford ColBERT (HF_ColBERT) checkpoint without its projection linear.weight")
  dim, hidden = weights["linear.weight"].shape
  if hidden != backbone_config.hidden_size:
    raise InputError(folder, f"linear.weight is [{dim}, {hidden}]; expected [dim, {backbone_config.hidden_size}]")
  return settings, (Layer(dim, bias=False),), [{"linear.weight": weights["linear.weight"]}]
