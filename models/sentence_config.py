"""The sentence-transformers files of a model folder: pooling, normalisation, length, prompts.

Reads and writes modules.json, <pooling>/config.json, sentence_bert_config.json and
config_sentence_transformers.json, so a folder round-trips with sentence-transformers.
"""
import dataclasses
import json

from etils import epath

from .. import checks
from ..errors import InputError
from ..files import as_path, read_json, write_atomic
from .heads.pooling import MODES as POOLING_MODES

POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                "lasttoken": "pooling_mode_lasttoken"}
UNSUPPORTED_POOLING = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
  """How token states become a sentence embedding; each field is checked when the config is made."""
  pooling: str = "mean"
  normalize: bool = False
  max_length: int | None = None
  query_prompt: str = ""
  document_prompt: str = ""

  def __post_init__(self):
    checks.choice(self.pooling, "pooling", POOLING_MODES)
    if not isinstance(self.normalize, bool):
      raise InputError("normalize", f"expected true or false, got {self.normalize!r}")
    for name in ("query_prompt", "document_prompt"):
      if not isinstance(getattr(self, name), str):
        raise InputError(name, f"expected a string, got {getattr(self, name)!r}")


def _modules(folder: epath.Path) -> dict[str, str]:
  """{module type: its folder} from modules.json; a module that would change the embeddings
  beyond these settings, or a folder that is not there, is an InputError."""
  path = folder / "modules.json"
  kinds = {}
  for i, module in enumerate(read_json(path, list)):
    if not isinstance(module, dict) or not isinstance(module.get("type"), str):
      raise InputError(path, f"module {i}: expected an object with a string \"type\", got {module!r}")
    kind, sub = module["type"].rsplit(".", 1)[-1], module.get("path", "")
    if kind not in SUPPORTED_MODULES:
      raise InputError(path, f"module {i} has type {module['type']!r}; supported: {list(SUPPORTED_MODULES)}")
    if kind == "Pooling" and not (folder / sub / "config.json").is_file():
      raise InputError(path, f"module {i} (Pooling) names folder {sub!r}, but {folder / sub / 'config.json'} "
                             "does not exist")
    kinds[kind] = sub
  return kinds


def _pooling(path) -> str:
  cfg = read_json(path)
  on = [mode for mode, key in POOLING_KEYS.items() if cfg.get(key)]
  off = [key for key in UNSUPPORTED_POOLING if cfg.get(key)]
  if off or len(on) != 1:
    raise InputError(path, f"expected exactly one of {sorted(POOLING_KEYS.values())} set, found {on + off}")
  if cfg.get("include_prompt") is False:
    raise InputError(path, "include_prompt=false (prompt tokens excluded from pooling) is not supported")
  return on[0]


def read(folder) -> SentenceConfig:
  """The sentence-transformers settings of `folder`; defaults (mean, no norm) when it has none."""
  folder = as_path(folder)
  if not (folder / "modules.json").is_file():
    return SentenceConfig()
  kinds = _modules(folder)
  pooling = _pooling(folder / kinds["Pooling"] / "config.json") if "Pooling" in kinds else "mean"
  bert_cfg = folder / "sentence_bert_config.json"
  max_length = read_json(bert_cfg).get("max_seq_length") if bert_cfg.is_file() else None
  if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)):
    raise InputError(bert_cfg, f"max_seq_length: expected an integer or null, got {max_length!r}")
  st_cfg = folder / "config_sentence_transformers.json"
  prompts = read_json(st_cfg).get("prompts", {}) if st_cfg.is_file() else {}
  if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
    raise InputError(st_cfg, f"prompts: expected an object of strings, got {prompts!r}")
  document_prompt = next((prompts[n] for n in DOCUMENT_PROMPT_NAMES if n in prompts), "")
  return SentenceConfig(pooling, "Normalize" in kinds, max_length, prompts.get("query", ""), document_prompt)


def write(folder, config: SentenceConfig, dimension: int) -> None:
  folder = as_path(folder)
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  if config.normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "2_Normalize").mkdir(exist_ok=True)
  (folder / "1_Pooling").mkdir(exist_ok=True)
  pooling = {"word_embedding_dimension": dimension,
             **{key: mode == config.pooling for mode, key in POOLING_KEYS.items()}}
  prompts = {"query": config.query_prompt, "document": config.document_prompt}
  write_atomic(folder / "1_Pooling" / "config.json", json.dumps(pooling, indent=2))
  write_atomic(folder / "sentence_bert_config.json", json.dumps({"max_seq_length": config.max_length}, indent=2))
  write_atomic(folder / "config_sentence_transformers.json", json.dumps({"prompts": prompts}, indent=2))
  write_atomic(folder / "modules.json", json.dumps(modules, indent=2))
