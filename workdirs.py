"""The folders retrax writes, laid out here and nowhere else. Any of them may be on Cloud Storage.

A retriever checkpoint (`retrax.load` reads it; a training workdir is one):
  retriever.json                  kind, format, backbone config, the kind's settings (written last)
  tokenizer/                      the tokenizer files
  params/                         the parameters, as an orbax pytree; or, in a training workdir,
  checkpoints/<step>/params       one per saved step, beside opt_state/, data/ and config/
  model_state/                    the module's variables that are not parameters (an SAE's counters,
                                  a threshold), when it has any; checkpoints/<step>/model_state

A training workdir, besides:
  metrics.jsonl, tensorboard/     one line and one event per logged step
  negatives.jsonl                 mined hard negatives (config.data.mine)
  data/                           the generated collection (config.data.path "")
  eval/<step>/                    an evaluation workdir per periodic evaluation

An evaluation workdir:
  results.json, run.trec          the metrics and the run
  limit-synthetic/                the generated collection (config.data "")
"""
from etils import epath

from .files import as_path

MANIFEST = "retriever.json"


class Checkpoint:

  def __init__(self, root):
    self.root = as_path(root)

  @property
  def manifest(self) -> epath.Path:
    return self.root / MANIFEST

  @property
  def tokenizer(self) -> epath.Path:
    return self.root / "tokenizer"

  @property
  def params(self) -> epath.Path:
    return self.root / "params"

  @property
  def checkpoints(self) -> epath.Path:
    return self.root / "checkpoints"

  @property
  def model_state(self) -> epath.Path:
    return self.root / "model_state"

  def step_params(self, step: int) -> epath.Path:
    return self.checkpoints / str(step) / "params"

  def step_model_state(self, step: int) -> epath.Path:
    return self.checkpoints / str(step) / "model_state"


class TrainWorkdir(Checkpoint):

  @property
  def metrics(self) -> epath.Path:
    return self.root / "metrics.jsonl"

  @property
  def tensorboard(self) -> epath.Path:
    return self.root / "tensorboard"

  @property
  def negatives(self) -> epath.Path:
    return self.root / "negatives.jsonl"

  @property
  def generated_data(self) -> epath.Path:
    return self.root / "data"

  def eval(self, step: int) -> epath.Path:
    return self.root / "eval" / str(step)


class EvalWorkdir:

  def __init__(self, root):
    self.root = as_path(root)

  @property
  def results(self) -> epath.Path:
    return self.root / "results.json"

  @property
  def run(self) -> epath.Path:
    return self.root / "run.trec"

  @property
  def first_stage_results(self) -> epath.Path:
    """Written when a rerank stage follows: results.json and run.trec are then the reranked ones."""
    return self.root / "first_stage.json"

  @property
  def first_stage_run(self) -> epath.Path:
    return self.root / "first_stage.trec"

  @property
  def generated_data(self) -> epath.Path:
    return self.root / "limit-synthetic"
