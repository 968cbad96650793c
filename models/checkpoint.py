"""A retrax retriever checkpoint: one folder that `retrax.load` restores.

  <dir>/retriever.json   kind, backbone config (config.json form), sentence settings
  <dir>/tokenizer/       the tokenizer files
  <dir>/params/          the NNX parameters as an orbax pytree, or, in a training workdir,
  <dir>/checkpoints/<step>/params   one per saved step; the latest complete one is loaded

Saved into `<dir>.partial` and renamed, so an interrupted save leaves no checkpoint behind.
"""
import dataclasses
import json
import pathlib
import shutil

import jax
import orbax.checkpoint as ocp
import tokenizers
from flax import nnx

from ..errors import InputError
from . import hf, sentence_config
from .dense import DenseRetriever
from ..files import write_atomic

MANIFEST = "retriever.json"


def is_checkpoint(path) -> bool:
  return (pathlib.Path(path) / MANIFEST).is_file()


def write_manifest(retriever: DenseRetriever, directory) -> None:
  """retriever.json and tokenizer/ (written last, atomically: its presence means complete)."""
  directory = pathlib.Path(directory)
  (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
  for name, data in retriever.tokenizer_files.items():
    (directory / "tokenizer" / name).write_bytes(data)
  manifest = {"kind": "dense", "backbone": retriever.backbone_config.to_hf(),
              "settings": dataclasses.asdict(retriever.settings)}
  write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2))


def save(retriever: DenseRetriever, directory) -> None:
  directory = pathlib.Path(directory).absolute()
  partial = directory.with_name(directory.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(partial / "params", nnx.to_pure_dict(nnx.state(retriever.backbone, nnx.Param)))
  write_manifest(retriever, partial)
  shutil.rmtree(directory, ignore_errors=True)
  partial.rename(directory)


def params_dir(directory: pathlib.Path) -> pathlib.Path:
  if (directory / "params").is_dir():
    return directory / "params"
  steps = sorted(int(p.name) for p in (directory / "checkpoints").glob("*") if p.name.isdigit())
  if not steps:
    raise InputError(directory, "a retrax checkpoint needs params/ or a complete checkpoints/<step>/; found neither")
  return directory / "checkpoints" / str(steps[-1]) / "params"


def load(directory, *, dtype="float32", **overrides) -> DenseRetriever:
  directory = pathlib.Path(directory).absolute()
  try:
    manifest = json.loads((directory / MANIFEST).read_text())
  except json.JSONDecodeError as e:
    raise InputError(directory / MANIFEST, f"invalid JSON: {e.msg}", line=e.lineno) from None
  if manifest.get("kind") != "dense":
    raise InputError(directory / MANIFEST, f"kind {manifest.get('kind')!r}: expected 'dense'")
  config_cls, model_cls, _, _ = hf.architecture(manifest["backbone"], directory / MANIFEST)
  config = config_cls.from_hf(manifest["backbone"])
  backbone = model_cls(config, dtype=dtype, rngs=nnx.Rngs(0))
  state = nnx.state(backbone, nnx.Param)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(params_dir(directory), target)
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(backbone, state)
  settings = dataclasses.replace(sentence_config.SentenceConfig(**manifest["settings"]), **overrides)
  tokenizer_dir = directory / "tokenizer"
  files = {p.name: p.read_bytes() for p in tokenizer_dir.iterdir()}
  return DenseRetriever(backbone, config, tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")),
                        settings, tokenizer_files=files)
