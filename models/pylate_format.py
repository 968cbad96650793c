"""PyLate ColBERT folders (REFERENCES.md A6): a sentence-transformers folder whose modules.json
chains the backbone with pylate.models.Dense layers.

  modules.json                       Transformer, then 1_Dense, 2_Dense, … (type pylate.models.Dense.Dense)
  <i>_Dense/config.json              in_features, out_features, bias, activation_function, use_residual
  <i>_Dense/model.safetensors        linear.weight [out, in], linear.bias, residual.weight [out, in]
  config_sentence_transformers.json  model_type "ColBERT", prefixes, lengths, expansion, skiplist, prompts

sentence_bert_config.json's max_seq_length is not read: PyLate rewrites it at every tokenize call.
"""
import json

import numpy as np

from ..errors import InputError
from ..files import as_path, atomic_path, read_json, write_atomic
from .heads.projection import TORCH_ACTIVATIONS, Layer

DENSE_TYPES = ("pylate.models.Dense.Dense", "sentence_transformers.models.Dense",
               "sentence_transformers.models.Dense.Dense", "sentence_transformers.base.modules.dense.Dense")
CONFIG_KEYS = ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
               "attend_to_expansion_tokens", "skiplist_words")
_ACTIVATION_NAMES = {v: k for k, v in TORCH_ACTIVATIONS.items()}


def claims(folder) -> bool:
  """A folder whose config_sentence_transformers.json says model_type ColBERT or similarity MaxSim
  (PyLate keeps the config of a sentence-transformers model it was built from, model_type aside),
  or whose modules.json holds a PyLate Dense."""
  path = as_path(folder) / "config_sentence_transformers.json"
  config = read_json(path) if path.is_file() else {}
  if config.get("model_type") == "ColBERT" or config.get("similarity_fn_name") == "MaxSim":
    return True
  modules = as_path(folder) / "modules.json"
  return modules.is_file() and any(isinstance(m, dict) and m.get("type") == DENSE_TYPES[0]
                                   for m in read_json(modules, list))


def dense_folders(folder) -> list[str]:
  """The Dense modules' folders, in modules.json order."""
  path = as_path(folder) / "modules.json"
  if not path.is_file():
    return []
  out = []
  for i, module in enumerate(read_json(path, list)):
    if not isinstance(module, dict) or not isinstance(module.get("type"), str):
      raise InputError(path, f"module {i}: expected an object with a string \"type\", got {module!r}")
    if module["type"] in DENSE_TYPES:
      out.append(module.get("path", ""))
  return out


def read(folder, tokenizer, backbone_config) -> tuple[dict, tuple[Layer, ...], list[dict[str, np.ndarray]]]:
  """(ColBERTConfig fields, projection layers, their weights) of a PyLate folder."""
  del tokenizer
  return (read_settings(folder), *read_dense_chain(folder, backbone_config.hidden_size))


def read_settings(folder) -> dict:
  """The ColBERT settings of config_sentence_transformers.json (prompts included), as ColBERTConfig fields."""
  path = as_path(folder) / "config_sentence_transformers.json"
  config = read_json(path) if path.is_file() else {}
  out = {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None}
  prompts = config.get("prompts") or {}
  if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
    raise InputError(path, f"prompts: expected an object of strings, got {prompts!r}")
  out.update({f"{side}_prompt": prompts[side] for side in ("query", "document") if side in prompts})
  out.update(config.get("retrax", {}))
  return out


def read_dense_chain(folder, hidden_size: int) -> tuple[tuple[Layer, ...], list[dict[str, np.ndarray]]]:
  """(layers, weights) of the folder's Dense modules; weights as {linear.weight, linear.bias, residual.weight}."""
  from .backbones.hf import read_weights
  folder = as_path(folder)
  layers, weights, din = [], [], hidden_size
  for sub in dense_folders(folder):
    path = folder / sub / "config.json"
    config = read_json(path)
    activation = _ACTIVATION_NAMES.get(config.get("activation_function", TORCH_ACTIVATIONS["identity"]))
    if activation is None:
      raise InputError(path, f"activation_function {config['activation_function']!r} is not one of "
                             f"{sorted(_ACTIVATION_NAMES)}")
    if config.get("in_features") != din:
      raise InputError(path, f"in_features {config.get('in_features')!r}: expected {din}, the previous output")
    try:
      layer = Layer(config["out_features"], activation, config.get("bias", True), config.get("use_residual", False))
    except (KeyError, ValueError) as e:
      raise InputError(path, f"not a Dense config: {e}") from None
    layers.append(layer)
    weights.append(read_weights(folder / sub))
    din = layer.features
  return tuple(layers), weights


def write(folder, layers: tuple[Layer, ...], weights: list[dict[str, np.ndarray]], settings: dict,
          hidden_size: int) -> None:
  """modules.json, the Dense folders and config_sentence_transformers.json (the backbone is written apart)."""
  from safetensors.numpy import save_file
  folder = as_path(folder)
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
  din = hidden_size
  for i, (layer, tensors) in enumerate(zip(layers, weights), start=1):
    sub = folder / f"{i}_Dense"
    sub.mkdir(exist_ok=True)
    modules.append({"idx": i, "name": str(i), "path": sub.name, "type": DENSE_TYPES[0]})
    write_atomic(sub / "config.json", json.dumps({
        "in_features": din, "out_features": layer.features, "bias": layer.bias,
        "activation_function": TORCH_ACTIVATIONS[layer.activation], "use_residual": layer.residual}, indent=2))
    with atomic_path(sub / "model.safetensors") as tmp:
      save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, tmp)
    din = layer.features
  config = {"model_type": "ColBERT", "similarity_fn_name": "MaxSim", **{k: settings[k] for k in CONFIG_KEYS},
            "prompts": {"query": settings["query_prompt"], "document": settings["document_prompt"]},
            "default_prompt_name": None, "retrax": {"zero_expansion": settings["zero_expansion"]}}
  write_atomic(folder / "config_sentence_transformers.json", json.dumps(config, indent=2))
  write_atomic(folder / "sentence_bert_config.json",
               json.dumps({"max_seq_length": settings["document_length"] - 1, "do_lower_case": False}, indent=2))
  write_atomic(folder / "modules.json", json.dumps(modules, indent=2))
