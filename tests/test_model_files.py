"""Broken model folders: one InputError naming the file, never a traceback from deep inside (tiny random model)."""
import json
import re
import shutil

import numpy as np
import pytest

import retrax
from retrax.errors import InputError
from retrax.models import checkpoint
from retrax.models.load import random
from retrax.models.sentence_config import SentenceConfig
from retrax.models.vocab import word_level_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A tiny model saved as a Hugging Face / sentence-transformers folder and as a retrax checkpoint."""
  root = tmp_path_factory.mktemp("model")
  tokenizer = word_level_tokenizer(["who likes neon kites", "velvet harps"], 50)
  model = random(
      dict(model_type="bert", vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
           num_attention_heads=2, intermediate_size=32, max_position_embeddings=32),
      tokenizer, SentenceConfig(pooling="mean", normalize=True))
  model.save_pretrained(root / "hf")
  checkpoint.save(model, root / "retrax")
  return root, model.encode(["who likes neon kites"])


def _copy(saved, kind, tmp_path):
  folder = tmp_path / kind
  shutil.copytree(saved[0] / kind, folder)
  return folder


def test_the_saved_folders_load(saved):
  for kind in ("hf", "retrax"):
    np.testing.assert_allclose(retrax.load(saved[0] / kind).encode(["who likes neon kites"]), saved[1], atol=1e-6)
  assert not [p for p in saved[0].iterdir() if "partial" in p.name]


def _break_hf(folder, how):
  if how == "truncated safetensors":
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    return folder / "model.safetensors", "not a readable safetensors file"
  if how == "corrupt tokenizer.json":
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"')
    return folder / "tokenizer.json", "not a readable tokenizer.json"
  if how == "modules.json names a missing folder":
    shutil.rmtree(folder / "1_Pooling")
    return folder / "modules.json", "module 1 (Pooling) names folder '1_Pooling', but"
  if how == "modules.json has a module retrax cannot run":
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder / "modules.json", "module 3 has type 'sentence_transformers.models.Dense'; supported:"
  if how == "only config.json":
    for path in folder.iterdir():
      if path.name != "config.json":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return folder, "the weights are missing: expected model.safetensors"
  if how == "an int32 weight":
    from safetensors.numpy import load_file, save_file
    tensors = load_file(folder / "model.safetensors")
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"].astype(np.int32)
    save_file(tensors, folder / "model.safetensors")
    return folder / "model.safetensors", "weight embeddings.word_embeddings.weight is stored as int32; expected a floating"
  if how == "config.json is not JSON":
    (folder / "config.json").write_text('{"model_type": "bert",')
    return folder / "config.json", "invalid JSON"
  raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated safetensors", "corrupt tokenizer.json", "modules.json names a missing folder",
                                 "modules.json has a module retrax cannot run", "only config.json",
                                 "config.json is not JSON", "an int32 weight"])
def test_a_broken_hugging_face_folder_is_one_error_naming_the_file(saved, tmp_path, how):
  where, expected = _break_hf(_copy(saved, "hf", tmp_path), how)
  with pytest.raises(InputError, match=f"^{re.escape(str(where))}(:\\d+)?: {re.escape(expected)}"):
    retrax.load(tmp_path / "hf")


@pytest.mark.parametrize("how, where, expected", [
    ("manifest", "retriever.json", "invalid JSON"),
    ("tokenizer", "tokenizer", "expected tokenizer.json"),
    ("params", "params", "cannot be read"),
])
def test_a_broken_retrax_checkpoint_is_one_error_naming_the_file(saved, tmp_path, how, where, expected):
  folder = _copy(saved, "retrax", tmp_path)
  if how == "manifest":
    (folder / "retriever.json").write_text('{"kind": "dense", ')
  elif how == "tokenizer":
    (folder / "tokenizer" / "tokenizer.json").unlink()
  else:
    for path in (folder / "params").rglob("*"):
      if path.is_file() and path.parent.name == "d":
        path.write_bytes(b"\0" * path.stat().st_size)
  with pytest.raises(InputError, match=f"^{re.escape(str(folder / where))}(:\\d+)?: {re.escape(expected)}"):
    retrax.load(folder)


def test_a_format_1_checkpoint_holding_the_backbone_alone_still_loads(saved, tmp_path):
  """Checkpoints written before retriever kinds: no "format", params are the backbone's tree."""
  import orbax.checkpoint as ocp
  from flax import nnx
  folder = _copy(saved, "retrax", tmp_path)
  module = retrax.load(folder).module
  shutil.rmtree(folder / "params")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(folder / "params", nnx.to_pure_dict(nnx.state(module.backbone, nnx.Param)))
  manifest = json.loads((folder / "retriever.json").read_text())
  assert manifest["format"] == checkpoint.FORMAT and manifest["kind"] == "dense"
  old = {"kind": "dense", "backbone": manifest["parts"]["backbone"]["architecture"], "settings": manifest["settings"]}
  (folder / "retriever.json").write_text(json.dumps(old))
  np.testing.assert_allclose(retrax.load(folder).encode(["who likes neon kites"]), saved[1], atol=1e-6)


def test_a_format_2_manifest_still_loads(saved, tmp_path):
  """Format 2 named the backbone's config at the top level; the parameters are the module's tree, as now."""
  folder = _copy(saved, "retrax", tmp_path)
  manifest = json.loads((folder / "retriever.json").read_text())
  assert manifest["parts"] == {"backbone": {"architecture": retrax.load(folder).backbone_config.to_hf()}}
  old = {"kind": "dense", "format": 2, "backbone": manifest["parts"]["backbone"]["architecture"],
         "settings": manifest["settings"]}
  (folder / "retriever.json").write_text(json.dumps(old))
  np.testing.assert_allclose(retrax.load(folder).encode(["who likes neon kites"]), saved[1], atol=1e-6)


@pytest.mark.parametrize("manifest, expected", [
    ({"kind": "sparse-ish"}, "kind 'sparse-ish' is not one of ['colbert', 'dense']"),
    ({"format": 7}, "format 7: this retrax reads formats 1, 2 and 3"),
    ({"parts": {"backbone": {"architecture": {"model_type": "gpt9"}}}}, "model_type 'gpt9' is not supported; expected one of ['bert', 'modernbert', 'roberta', 'xlm-roberta']"),
])
def test_an_unknown_kind_or_format_in_the_manifest_is_named(saved, tmp_path, manifest, expected):
  folder = _copy(saved, "retrax", tmp_path)
  (folder / "retriever.json").write_text(json.dumps({**json.loads((folder / "retriever.json").read_text()),
                                                     **manifest}))
  with pytest.raises(InputError, match=f"^{re.escape(str(folder / 'retriever.json'))}: {re.escape(expected)}$"):
    retrax.load(folder)


def test_an_unknown_kind_for_a_hugging_face_folder_is_named(saved):
  with pytest.raises(InputError, match=r"^kind: kind 'nope' is not one of \['colbert', 'dense'\]$"):
    retrax.load(saved[0] / "hf", kind="nope")


def test_saving_onto_a_file_or_under_one_is_an_error_that_names_it(saved, tmp_path):
  model = retrax.load(saved[0] / "hf")
  file = tmp_path / "model.bin"
  file.write_text("not a folder")
  with pytest.raises(InputError, match=f"^{re.escape(str(file))}: expected a folder .* found a file$"):
    model.save_pretrained(file)
  with pytest.raises(InputError, match=f"^{re.escape(str(file / 'hf'))}: cannot write this folder: Not a directory"):
    model.save_pretrained(file / "hf")
  assert file.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_a_tokenizer_larger_than_the_embedding_table_is_named(saved, tmp_path):
  folder = _copy(saved, "hf", tmp_path)
  config = json.loads((folder / "config.json").read_text())
  rows = config["vocab_size"] - 3
  config["vocab_size"] = rows
  (folder / "config.json").write_text(json.dumps(config))
  from safetensors.numpy import load_file, save_file
  tensors = load_file(folder / "model.safetensors")
  tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"][:rows]
  save_file(tensors, folder / "model.safetensors")
  with pytest.raises(InputError, match=f"^{re.escape(str(folder))}: the tokenizer has {rows + 3} token ids, but "
                                       f"the model's embedding table has {rows} rows"):
    retrax.load(folder)


@pytest.mark.parametrize("head, described", [("BertForSequenceClassification", "a sequence-classification head"),
                                             ("BertForMaskedLM", "a masked-LM head")])
def test_a_task_head_no_kind_runs_is_named_and_its_encoder_loads_when_asked(saved, tmp_path, head, described):
  """Unclaimed, a folder with a head is an InputError naming it; kind='dense' reads its encoder as
  sentence-transformers does (mean pooling over the base model, the head dropped)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  st = pytest.importorskip("sentence_transformers")
  folder = tmp_path / "headed"
  config = json.loads((saved[0] / "hf" / "config.json").read_text())
  torch.manual_seed(0)
  getattr(transformers, head)(transformers.BertConfig(**{k: v for k, v in config.items() if k != "architectures"})
                              ).save_pretrained(folder)
  shutil.copy(saved[0] / "hf" / "tokenizer.json", folder / "tokenizer.json")
  with pytest.raises(InputError, match=f"^{re.escape(str(folder / 'config.json'))}: holds {described} \\({head}\\), "
                                       r"which no retrax kind runs \(kinds: colbert, dense\); to use its encoder alone"):
    retrax.load(folder)
  texts = ["who likes neon kites", "velvet harps"]
  reference = st.SentenceTransformer(str(folder), device="cpu").encode(texts)
  np.testing.assert_allclose(retrax.load(folder, kind="dense").encode(texts), reference, atol=1e-5)


def test_a_setting_the_kind_lacks_is_named_with_the_kinds_settings(saved):
  with pytest.raises(InputError, match=r"^query_length: not a setting of the 'dense' kind; its settings are pooling, "):
    retrax.load(saved[0] / "hf", query_length=12)
  with pytest.raises(InputError, match=r"^query_length: not a setting of the 'dense' kind"):
    retrax.load(saved[0] / "retrax", query_length=12)
