"""sentence-transformers 6 MultiVectorEncoder folders (REFERENCES.md A6):

  config_sentence_transformers.json  model_type "MultiVectorEncoder"; prompts {query, document}
  modules.json                       Transformer, Dense…, MultiVectorMask, Normalize
  sentence_bert_config.json          query_length, document_length,
                                     query_expansion {strategy "fixed", attend, token, length} | null
  <i>_Dense/                         as PyLate's Dense (linear.weight, linear.bias, residual.weight)
  <i>_MultiVectorMask/config.json    skiplist_words, skiplist_tasks ["document"], keep_only_token_ids null

A prompt that is one token of the tokenizer ("[Q] ") is ColBERT's marker, inserted after [CLS]
as sentence-transformers tokenises it; any other prompt is text prepended to every input.
"""

from ..errors import InputError
from ..files import as_path, read_json
from . import pylate_format

PREFIX = "sentence_transformers."
TYPES = {"base.modules.transformer.Transformer": "transformer", "base.modules.dense.Dense": "dense",
         "multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask": "mask",
         "base.modules.normalize.Normalize": "normalize"}


def claims(folder) -> bool:
  path = as_path(folder) / "config_sentence_transformers.json"
  return path.is_file() and read_json(path).get("model_type") == "MultiVectorEncoder"


def _modules(folder) -> dict[str, str]:
  """{role: the module's folder} of modules.json; a module retrax cannot compute is an InputError."""
  path = as_path(folder) / "modules.json"
  roles = {}
  for i, module in enumerate(read_json(path, list)):
    role = TYPES.get(str(module.get("type", "")).removeprefix(PREFIX)) if isinstance(module, dict) else None
    if role is None:
      raise InputError(path, f"module {i} ({module!r}) is not one of {[PREFIX + t for t in TYPES]}")
    roles.setdefault(role, module.get("path", ""))
  if "normalize" not in roles:
    raise InputError(path, "no Normalize module: retrax's ColBERT scores L2-normalised token vectors")
  return roles


def _expansion(path, config: dict, tokenizer) -> dict:
  expansion = config.get("query_expansion")
  if expansion is None:
    return {"do_query_expansion": False}
  if not isinstance(expansion, dict) or expansion.get("strategy") != "fixed":
    raise InputError(path, f"query_expansion {expansion!r}: retrax expands queries to a fixed length "
                           "(strategy \"fixed\"); \"min\" lets longer queries through untruncated")
  token = expansion.get("token")
  if token is not None and tokenizer.token_to_id(token) not in map(tokenizer.token_to_id, ("[MASK]", "<mask>")):
    raise InputError(path, f"query_expansion token {token!r}: retrax expands with the mask token")
  return {"do_query_expansion": True, "query_length": expansion["length"],
          "attend_to_expansion_tokens": bool(expansion.get("attend", False))}


def _skiplist(folder, sub: str | None) -> dict:
  """MultiVectorMask's skiplist (none without the module)."""
  path = as_path(folder) / (sub or "") / "config.json"
  config = read_json(path) if sub is not None and path.is_file() else {}
  words = config.get("skiplist_words") or []
  if words and list(config.get("skiplist_tasks", ["document"])) != ["document"]:
    raise InputError(path, f"skiplist_tasks {config['skiplist_tasks']!r}: retrax skips words in documents only")
  if config.get("keep_only_token_ids") is not None:
    raise InputError(path, "keep_only_token_ids is not supported")
  return {"skiplist_words": tuple(words)}


def read(folder, tokenizer, backbone_config):
  """(ColBERTConfig fields, projection layers, their weights)."""
  from .host_model import max_positions
  folder = as_path(folder)
  roles = _modules(folder)
  path = folder / roles["transformer"] / "sentence_bert_config.json"
  config = read_json(path) if path.is_file() else {}
  positions = max_positions(backbone_config)
  settings = {"query_length": config.get("query_length") or positions,
              "document_length": config.get("document_length") or positions,
              **_expansion(path, config, tokenizer), **_skiplist(folder, roles.get("mask"))}
  path = folder / "config_sentence_transformers.json"
  prompts = read_json(path).get("prompts") or {}
  if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
    raise InputError(path, f"prompts: expected an object of strings, got {prompts!r}")
  for side in ("query", "document"):
    prompt = prompts.get(side, "")
    marker = bool(prompt) and tokenizer.token_to_id(prompt) is not None
    settings[f"{side}_prefix"], settings[f"{side}_prompt"] = (prompt, "") if marker else ("", prompt)
  return (settings, *pylate_format.read_dense_chain(folder, backbone_config.hidden_size))
