"""The sentence-transformers files of a model folder: pooling, normalisation, length, prompts.

Reads and writes modules.json, <pooling>/config.json, sentence_bert_config.json and
config_sentence_transformers.json, so a folder round-trips with sentence-transformers.
"""
import dataclasses
import json
import pathlib

from ..errors import InputError
from ..files import write_atomic

POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                "lasttoken": "pooling_mode_lasttoken"}
UNSUPPORTED_POOLING = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens")
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
  pooling: str = "mean"
  normalize: bool = False
  max_length: int | None = None
  query_prompt: str = ""
  document_prompt: str = ""


def _read_json(path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise InputError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None


def _pooling(path) -> str:
  cfg = _read_json(path)
  on = [mode for mode, key in POOLING_KEYS.items() if cfg.get(key)]
  off = [key for key in UNSUPPORTED_POOLING if cfg.get(key)]
  if off or len(on) != 1:
    raise InputError(path, f"expected exactly one of {sorted(POOLING_KEYS.values())} set, found {on + off}")
  if cfg.get("include_prompt") is False:
    raise InputError(path, "include_prompt=false (prompt tokens excluded from pooling) is not supported")
  return on[0]


def read(folder) -> SentenceConfig:
  """The sentence-transformers settings of `folder`; defaults (mean, no norm) when it has none."""
  folder = pathlib.Path(folder)
  if not (folder / "modules.json").is_file():
    return SentenceConfig()
  modules = _read_json(folder / "modules.json")
  kinds = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
  pooling = _pooling(folder / kinds["Pooling"] / "config.json") if "Pooling" in kinds else "mean"
  bert_cfg = folder / "sentence_bert_config.json"
  max_length = _read_json(bert_cfg).get("max_seq_length") if bert_cfg.is_file() else None
  st_cfg = folder / "config_sentence_transformers.json"
  prompts = _read_json(st_cfg).get("prompts", {}) if st_cfg.is_file() else {}
  document_prompt = next((prompts[n] for n in DOCUMENT_PROMPT_NAMES if n in prompts), "")
  return SentenceConfig(pooling, "Normalize" in kinds, max_length, prompts.get("query", ""), document_prompt)


def write(folder, config: SentenceConfig, dimension: int) -> None:
  folder = pathlib.Path(folder)
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
