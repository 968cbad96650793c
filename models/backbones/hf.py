"""Hugging Face checkpoint folders to NNX backbones and back.

A folder holds `config.json` and `model.safetensors` (or a sharded safetensors index, or
`pytorch_model.bin`). Every architecture module provides `Config.from_hf/to_hf`, the
model class and `weight_map(config) -> [(hf_key, nnx_path, transpose)]`; loading checks
the checkpoint against that map in both directions.
"""
import importlib
import json
import re

from etils import epath
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ...errors import InputError
from ...files import as_path, atomic_path, local_copy, read_json, write_atomic

# model_type → (module in retrax.models, config class, model class, transformers class).
ARCHITECTURES = {
    "bert": ("bert", "BertConfig", "Bert", "BertModel"),
    "roberta": ("bert", "BertConfig", "Bert", "RobertaModel"),
    "xlm-roberta": ("bert", "BertConfig", "Bert", "XLMRobertaModel"),
    "modernbert": ("modernbert", "ModernBertConfig", "ModernBert", "ModernBertModel"),
}
# base_model_prefix of the *For* task heads that wrap a backbone.
BASE_PREFIXES = ("bert.", "roberta.", "model.")
# Present in many checkpoints, unused by an encoder's hidden states.
UNUSED = re.compile(r"^(pooler\..*|.*position_ids)$")


def read_config(folder) -> dict:
  path = as_path(folder) / "config.json"
  if not path.is_file():
    raise InputError(folder, "expected a Hugging Face model folder with config.json")
  return read_json(path)


# The task heads of transformers' *For* classes, by class-name suffix; no retrax kind runs them yet.
TASK_HEADS = {"ForSequenceClassification": "a sequence-classification head", "ForMaskedLM": "a masked-LM head",
              "ForCausalLM": "a causal-LM head", "ForPreTraining": "pre-training heads (masked LM, next sentence)",
              "ForTokenClassification": "a token-classification head",
              "ForQuestionAnswering": "a question-answering head", "ForMultipleChoice": "a multiple-choice head"}


def task_head(folder) -> tuple[str, str] | None:
  """(class name, description) of the task head that config.json's `architectures` names; None for
  an encoder alone (BertModel, or sentence-transformers' folders)."""
  for name in read_config(folder).get("architectures") or ():
    for suffix, description in TASK_HEADS.items():
      if str(name).endswith(suffix):
        return str(name), description
  return None


def architecture(hf_config: dict, source):
  """(config class, model class, weight_map, transformers class name) for a config.json dict."""
  kind = hf_config.get("model_type")
  if kind not in ARCHITECTURES:
    raise InputError(source, f"model_type {kind!r} is not supported; expected one of {sorted(ARCHITECTURES)}")
  module_name, config_cls, model_cls, hf_class = ARCHITECTURES[kind]
  module = importlib.import_module(f"{__package__}.{module_name}")
  return getattr(module, config_cls), getattr(module, model_cls), module.weight_map, hf_class


def read_weights(folder) -> dict[str, np.ndarray]:
  """Every tensor of the folder's weights as float32; an unreadable file is an InputError naming it."""
  folder = as_path(folder)
  index = folder / "model.safetensors.index.json"
  if (folder / "model.safetensors").is_file():
    files = [folder / "model.safetensors"]
  elif index.is_file():
    files = _shards(index)
  elif (folder / "pytorch_model.bin").is_file():
    return _read_torch_bin(folder / "pytorch_model.bin")
  else:
    found = sorted(p.name for p in folder.iterdir())
    raise InputError(folder, "the weights are missing: expected model.safetensors, model.safetensors.index.json or "
                     f"pytorch_model.bin, found {found}")
  return {key: value for f in files for key, value in _read_safetensors(f).items()}


def _shards(index: epath.Path) -> list[epath.Path]:
  weight_map = read_json(index).get("weight_map")
  if not isinstance(weight_map, dict):
    raise InputError(index, 'expected a "weight_map" object')
  files = sorted({index.parent / str(f) for f in weight_map.values()})
  missing = [f.name for f in files if not f.is_file()]
  if missing:
    raise InputError(index, f"names shard files that are missing: {missing}")
  return files


def _read_safetensors(path) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError, safe_open
  try:
    with local_copy(path) as local, safe_open(local, framework="flax") as reader:  # flax: bfloat16 tensors too
      tensors = {key: reader.get_tensor(key) for key in reader.keys()}
  except (SafetensorError, OSError, ValueError) as e:
    raise InputError(path, f"not a readable safetensors file, truncated or corrupt? ({e})") from None
  return {key: _as_weight(key, value, path) for key, value in tensors.items()}


def _as_weight(key: str, value, path) -> np.ndarray:
  """A floating-point tensor as float32; an integer buffer (position_ids) as it is; any other
  dtype is an InputError, as no weight can hold it."""
  if jnp.issubdtype(value.dtype, jnp.floating):
    return np.asarray(value, dtype=np.float32)
  if UNUSED.match(key):
    return np.asarray(value)
  raise InputError(path, f"weight {key} is stored as {value.dtype}; expected a floating-point dtype "
                         "(float32, float16 or bfloat16)")


def _read_torch_bin(path):
  try:
    import torch
  except ImportError:
    raise InputError(path, "reading pytorch_model.bin needs torch; install it or convert to safetensors") from None
  try:
    with local_copy(path) as local:
      state = torch.load(local, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many kinds (RuntimeError, UnpicklingError, EOFError, …) for a bad file
    raise InputError(path, f"not a readable PyTorch checkpoint, truncated or corrupt? ({e})") from None
  return {k: _as_weight(k, (v.float() if v.is_floating_point() else v).numpy(), path) for k, v in state.items()}


# TensorFlow-era names that transformers still reads (and writes back) for LayerNorm parameters.
LEGACY_NORM_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))


def _canonical_names(tensors, expected) -> tuple[dict, set]:
  """(tensors, heads): keys without the base model's prefix (`bert.`, …) and with LayerNorm's
  gamma/beta as weight/bias; heads are the keys outside that prefix when the checkpoint has one
  (a task model's heads, e.g. Stanford ColBERT's `linear.weight`), which the backbone ignores as
  transformers does."""
  out, prefixed = {}, False
  for key, value in tensors.items():
    for old, new in LEGACY_NORM_NAMES:
      if key.endswith(old) and key[:-len(old)] + new not in tensors:
        key = key[:-len(old)] + new
    for prefix in BASE_PREFIXES:
      if key.startswith(prefix) and (key[len(prefix):] in expected or UNUSED.match(key[len(prefix):])):
        key, prefixed = key[len(prefix):], True
        break
    out[key] = value
  heads = {k for k in tensors if not k.startswith(BASE_PREFIXES)} - expected if prefixed else set()
  return out, heads


def assign(model: nnx.Module, tensors: dict, wmap, source) -> None:
  """Copies checkpoint tensors into `model` in place; a missing, extra or misshapen weight is an error."""
  expected = {hf for hf, _, _ in wmap}
  tensors, heads = _canonical_names(tensors, expected)
  missing = sorted(expected - tensors.keys())
  extra = sorted(k for k in tensors.keys() - expected - heads if not UNUSED.match(k))
  if missing or extra:
    raise InputError(source, f"weights do not match the architecture: missing {missing[:5]}"
                     f"{' …' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' …' if len(extra) > 5 else ''}")
  state = nnx.state(model, nnx.Param)
  pure = nnx.to_pure_dict(state)
  for hf, path, transpose in wmap:
    node = pure
    for p in path[:-1]:
      node = node[p]
    value = tensors[hf].T if transpose else tensors[hf]
    if value.shape != node[path[-1]].shape:
      raise InputError(source, f"weight {hf} has shape {value.shape}, expected {node[path[-1]].shape}")
    node[path[-1]] = jnp.asarray(value)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)


def load_backbone(folder, dtype=jnp.float32):
  """Returns (config, model) for a Hugging Face folder."""
  hf_config = read_config(folder)
  config_cls, model_cls, wmap, _ = architecture(hf_config, as_path(folder) / "config.json")
  try:
    config = config_cls.from_hf(hf_config)
  except (KeyError, TypeError, ValueError) as e:
    raise InputError(as_path(folder) / "config.json", f"unsupported or incomplete config: {e}") from None
  model = model_cls(config, dtype=dtype, rngs=nnx.Rngs(0))
  assign(model, read_weights(folder), wmap(config), folder)
  return config, model


def tensors_of(model: nnx.Module, wmap) -> dict[str, np.ndarray]:
  """`model`'s weights under the names of a weight map, float32, in torch's layout (assign's inverse)."""
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tensors = {}
  for hf, path, transpose in wmap:
    node = pure
    for p in path:
      node = node[p]
    value = np.asarray(node, dtype=np.float32)
    tensors[hf] = np.ascontiguousarray(value.T if transpose else value)
  return tensors


def backbone_tensors(model: nnx.Module, config) -> dict[str, np.ndarray]:
  """The backbone's weights under their Hugging Face names."""
  *_, wmap, _ = architecture(config.to_hf(), "backbone")
  return tensors_of(model, wmap(config))


def resize_vocab(model: nnx.Module, size: int) -> nnx.Module:
  """The backbone with `size` token embeddings (config.vocab_size too): the old rows kept, new rows
  their mean (PyLate grows the table by transformers' resize_token_embeddings for [Q] and [D])."""
  config = model.config
  hf_config = {**config.to_hf(), "vocab_size": size}
  config_cls, model_cls, wmap, _ = architecture(hf_config, "resize_vocab")
  table_name = importlib.import_module(model_cls.__module__).TOKEN_EMBEDDINGS
  dtype = getattr(model, table_name).dtype
  tensors = backbone_tensors(model, config)
  key = next(hf for hf, path, _ in wmap(config) if path[0] == table_name)
  old = tensors[key]
  tensors[key] = np.concatenate([old, np.broadcast_to(old.mean(0), (size - len(old), old.shape[1]))])
  new_config = config_cls.from_hf(hf_config)
  resized = model_cls(new_config, dtype=dtype, rngs=nnx.Rngs(0))
  assign(resized, tensors, wmap(new_config), "resize_vocab")
  return resized


def export_backbone(model: nnx.Module, config, folder) -> None:
  """Writes config.json and model.safetensors that transformers' AutoModel loads."""
  from safetensors.numpy import save_file
  hf_config = config.to_hf()
  *_, class_name = architecture(hf_config, folder)
  tensors = backbone_tensors(model, config)
  folder = as_path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  write_atomic(folder / "config.json", json.dumps({**hf_config, "architectures": [class_name]}, indent=2))
  with atomic_path(folder / "model.safetensors") as tmp:
    save_file(tensors, tmp)
