"""BERT and XLM-RoBERTa ports against transformers in PyTorch, on the same padded inputs."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from retrax.errors import InputError
from retrax.models.backbones import hf, unpadding
from retrax.models.dropout import Dropout

from dropout_replay import RecordingDropout, replaying

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=40)


def _inputs(pad_id, seed=0):
  rng = np.random.default_rng(seed)
  lengths = [12, 7, 3]
  ids = np.full((3, 12), pad_id, np.int32)
  mask = np.zeros((3, 12), np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n] = rng.integers(3, TINY["vocab_size"], n)
    mask[row, :n] = 1
  types = (np.arange(12)[None] >= 5).astype(np.int32) * mask
  return ids, mask, types


@pytest.fixture(params=["bert", "bert-d16", "xlm-roberta"])
def torch_folder(request, tmp_path):
  """Heads of 8 dimensions run XLA's attention ops; bert-d16's two heads of 16 run retrax's XLA:CPU
  kernel on CPU (on packed tokens when unpadded)."""
  torch.manual_seed(0)
  if request.param.startswith("bert"):
    heads = 2 if request.param == "bert-d16" else TINY["num_attention_heads"]
    config = transformers.BertConfig(**{**TINY, "num_attention_heads": heads}, type_vocab_size=2, hidden_act="gelu")
    model = transformers.BertModel(config)
  else:
    config = transformers.XLMRobertaConfig(**TINY, type_vocab_size=1, pad_token_id=1, hidden_act="gelu_new")
    model = transformers.XLMRobertaModel(config)
  model.eval()
  model.save_pretrained(tmp_path)
  return model, tmp_path


def _torch_hidden(model, ids, mask, types):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types, dtype=torch.long)).last_hidden_state.numpy()


@pytest.mark.parametrize("packing", [None, 22, 27], ids=["padded", "unpadded-exact", "unpadded-slack"])
def test_hidden_states_match_transformers(torch_folder, packing):
  """22 real tokens of 36: unpadded into exactly 22 rows, and into 27 with 5 spare."""
  model, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  ids, mask, types = _inputs(config.pad_token_id)
  if config.type_vocab_size == 1:
    types = np.zeros_like(types)
  expected = _torch_hidden(model, ids, mask, types)
  got = np.asarray(ours(ids, mask, types, packing))
  real = mask.astype(bool)
  assert np.abs(got[real] - expected[real]).max() <= 1e-4
  if packing:
    assert not got[~real].any()


@pytest.mark.parametrize("torch_folder", ["bert-d16"], indirect=True)
def test_unpadded_attention_runs_on_the_packed_tokens(torch_folder, cpu_kernels):
  """Unpadded into 22 rows, each layer's attention kernel takes the 22 packed tokens [22, 2, 16]
  as they lie (no round trip through the padded [3, 12] layout)."""
  _, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  ids, mask, types = _inputs(config.pad_token_id)
  graphdef, state = nnx.split(ours)
  forward = jax.jit(lambda state, *inputs: nnx.merge(graphdef, state)(*inputs, 22))
  hlo = forward.lower(state, ids, mask, types).compile().as_text()
  calls = [line for line in hlo.splitlines() if "custom-call(" in line and "retrax_attention_forward" in line]
  assert len(calls) == config.num_hidden_layers and all("f32[22,2,16]" in line for line in calls), calls


def test_export_loads_back_in_transformers(torch_folder, tmp_path):
  model, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  hf.export_backbone(ours, config, tmp_path / "export")
  reloaded = transformers.AutoModel.from_pretrained(tmp_path / "export").eval()
  ids, mask, _ = _inputs(config.pad_token_id, seed=1)
  types = np.zeros_like(ids)
  np.testing.assert_allclose(_torch_hidden(reloaded, ids, mask, types), _torch_hidden(model, ids, mask, types),
                             atol=1e-6)
  assert not list((tmp_path / "export").glob("*.tmp"))


def test_missing_and_extra_weights_are_named(torch_folder, tmp_path):
  from safetensors.numpy import load_file, save_file
  _, folder = torch_folder
  tensors = load_file(folder / "model.safetensors")
  dropped = sorted(tensors)[0]
  del tensors[dropped]
  tensors["head.extra.weight"] = np.zeros(3, np.float32)
  save_file(tensors, folder / "model.safetensors")
  with pytest.raises(InputError, match=r"missing \[.*" + dropped.replace(".", r"\.") + r".*unexpected \['head\.extra\.weight'\]"):
    hf.load_backbone(folder)


def test_unknown_architecture_is_an_error(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(InputError, match=r"config\.json: model_type 'gpt2' is not supported"):
    hf.load_backbone(tmp_path)


def test_bad_config_json_names_the_line(tmp_path):
  (tmp_path / "config.json").write_text('{\n  "model_type": "bert",\n  oops\n}')
  with pytest.raises(InputError, match=r"config\.json:3: invalid JSON"):
    hf.load_backbone(tmp_path)


def test_training_dropout_matches_transformers_with_the_same_masks(torch_folder):
  """Hidden-state dropout after the embeddings and each block's output, attention-probability dropout."""
  _, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  ids, mask, types = _inputs(config.pad_token_id, seed=2)
  if config.type_vocab_size == 1:
    types = np.zeros_like(types)
  dropout = RecordingDropout(jax.random.key(3))
  got = np.asarray(ours(ids, mask, types, dropout=dropout))
  assert len(dropout.masks) == 1 + 3 * config.num_hidden_layers
  assert 0.05 < np.mean([(m == 0).mean() for m in dropout.masks]) < 0.15   # the configs' 0.1
  training = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").train()
  with replaying(dropout.masks):
    expected = _torch_hidden(training, ids, mask, types)
  real = mask.astype(bool)
  assert np.abs(got[real] - expected[real]).max() <= 1e-4


@pytest.mark.parametrize("shards", [1, 3])
def test_unpadded_training_draws_the_padded_runs_masks(torch_folder, shards):
  """Packed whole or one row per shard, each real token keeps its dropout masks, so the hidden
  states are the padded run's (which the test above compares with transformers)."""
  _, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  ids, mask, types = _inputs(config.pad_token_id, seed=2)
  types = np.zeros_like(types)
  run = lambda packing: np.asarray(ours(ids, mask, types, packing, Dropout(jax.random.key(3))))
  pack = unpadding.pack_index(mask, shards, int(unpadding.shard_tokens(mask, shards).max()) + 1)
  padded, packed = run(None), run(jnp.asarray(pack))
  real = mask.astype(bool)
  assert np.abs(padded - np.asarray(ours(ids, mask, types)))[real].max() > 1e-2  # dropout is on
  assert np.abs(packed[real] - padded[real]).max() <= 1e-5


def test_dropout_draws_from_the_key_and_rate_zero_is_eval_mode(torch_folder):
  model, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  ids, mask, types = _inputs(config.pad_token_id)
  types = np.zeros_like(types)
  run = lambda dropout=None: np.asarray(ours(ids, mask, types, dropout=dropout))
  a, b = run(Dropout(jax.random.key(0))), run(Dropout(jax.random.key(1)))
  np.testing.assert_array_equal(a, run(Dropout(jax.random.key(0))))
  assert np.abs(a - b).max() > 1e-2
  eval_mode = _torch_hidden(model, ids, mask, types)
  real = mask.astype(bool)
  for off in (run(), run(Dropout(jax.random.key(0), rate=0.0)), run(Dropout.off())):
    assert np.abs(off[real] - eval_mode[real]).max() <= 1e-4


def test_a_dropout_rate_outside_0_1_is_named(torch_folder):
  _, folder = torch_folder
  config = json.loads((folder / "config.json").read_text())
  (folder / "config.json").write_text(json.dumps({**config, "attention_probs_dropout_prob": 1.5}))
  with pytest.raises(InputError, match=r"attention_probs_dropout_prob 1\.5: expected 0 ≤ rate < 1"):
    hf.load_backbone(folder)


def test_gelu_and_its_gradient_match_torch():
  from retrax.models.backbones.bert import gelu
  x = np.random.default_rng(0).normal(0, 3, (4, 257)).astype(np.float32)
  g = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
  value, vjp = jax.vjp(gelu, x)
  tx = torch.tensor(x, requires_grad=True)
  expected = torch.nn.functional.gelu(tx)
  expected.backward(torch.tensor(g))
  np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(vjp(g)[0], tx.grad.numpy(), rtol=1e-5, atol=1e-6)
