"""tensorflow-datasets builder for BEIR-format collections, written as array_record for grain.

A collection gives three configs of the builder `beir_collection`:
  `<name>-corpus`   split `corpus`: {"id", "title", "text"}, in corpus file order;
  `<name>-queries`  one split per qrels split (`test`, `train`, `dev`): {"id", "text"}, the queries judged there;
  `<name>-qrels`    the same splits: {"query_id", "corpus_id", "score"}.
Read one with `tfds.data_source("beir_collection/scifact-qrels", split="test", data_dir=...)`;
text comes back as UTF-8 bytes, score as int32. Building and reading need no tensorflow.
Configs for BEIR's public collections download from UKP's server; `prepare` builds from a local folder.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ..files import as_path
from . import beir

URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
PUBLIC = ("msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020",
          "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact")
PARTS = ("corpus", "queries", "qrels")
FEATURES = {
    "corpus": {"id": tfds.features.Text(), "title": tfds.features.Text(), "text": tfds.features.Text()},
    "queries": {"id": tfds.features.Text(), "text": tfds.features.Text()},
    "qrels": {"query_id": tfds.features.Text(), "corpus_id": tfds.features.Text(), "score": np.int32},
}


def _corpus(folder, split):
  del split
  for doc_id, doc in beir.load_corpus(folder).items():
    yield {"id": doc_id, **doc}


def _queries(folder, split):
  for qid, text in beir.load_collection(folder, split).queries.items():
    yield {"id": qid, "text": text}


def _qrels(folder, split):
  for qid, judged in beir.load_collection(folder, split).qrels.items():
    for doc_id, grade in judged.items():
      yield {"query_id": qid, "corpus_id": doc_id, "score": grade}


RECORDS = {"corpus": _corpus, "queries": _queries, "qrels": _qrels}


@dataclasses.dataclass(eq=False)
class BeirConfig(tfds.core.BuilderConfig):
  """One part of one collection; `folder` is a local BEIR-format folder, None to download."""
  collection: str = ""
  part: str = "corpus"
  folder: str | None = None


def config(collection: str, part: str, folder=None) -> BeirConfig:
  """The config named `<collection>-<part>`."""
  return BeirConfig(name=f"{collection}-{part}", collection=collection, part=part,
                    folder=None if folder is None else str(folder))


class BeirCollection(tfds.core.GeneratorBasedBuilder):
  """BEIR corpus, queries and qrels as array_record files, records in file order."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [config(name, part) for name in PUBLIC for part in PARTS]

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This file. tfds 4.9's own lookup imports importlib_resources, absent on Python >= 3.9."""
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(FEATURES[self.builder_config.part]),
        disable_shuffling=True, homepage="https://github.com/beir-cellar/beir")

  def _split_generators(self, dl_manager):
    folder = self._folder(dl_manager)
    if self.builder_config.part == "corpus":
      return {"corpus": self._generate_examples(folder, None)}
    return {split: self._generate_examples(folder, split) for split in beir.splits(folder)}

  def _folder(self, dl_manager) -> epath.Path:
    cfg = self.builder_config
    if cfg.folder is not None:
      return as_path(cfg.folder)
    return as_path(dl_manager.download_and_extract(URL.format(cfg.collection))) / cfg.collection

  def _generate_examples(self, folder, split):
    """Yields (index, record) in file order."""
    yield from enumerate(RECORDS[self.builder_config.part](folder, split))


def prepare(folder, collection: str, data_dir) -> None:
  """Builds the three configs of `collection` from the BEIR-format `folder` into `data_dir`."""
  for part in PARTS:
    BeirCollection(config=config(collection, part, folder), data_dir=str(data_dir)).download_and_prepare()
