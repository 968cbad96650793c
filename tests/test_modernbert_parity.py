"""ModernBERT port against transformers' ModernBertModel in PyTorch, on the same right-padded inputs."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from retrax.models.backbones import hf
from retrax.models.backbones.modernbert import ModernBert, ModernBertConfig, weight_map

from dropout_replay import RecordingDropout, replaying

# 3 layers with global_attn_every_n_layers=2: global, local, global. local_attention=4 lets a
# local query see only |i − j| ≤ 2, so the window bites at length 12.
TINY = dict(vocab_size=200, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
            local_attention=4, global_attn_every_n_layers=2, global_rope_theta=1000.0, local_rope_theta=50.0,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = np.zeros((3, 12), np.int32)
  mask = np.zeros((3, 12), np.int32)
  for row, n in enumerate([12, 7, 3]):
    ids[row, :n] = rng.integers(3, TINY["vocab_size"], n)
    mask[row, :n] = 1
  return ids, mask


@pytest.fixture(params=[("eager", False), ("sdpa", True)], ids=["eager-nobias", "sdpa-bias"])
def torch_folder(request, tmp_path):
  """A saved random ModernBertModel; parameters perturbed so that norms and biases are not 1 and 0."""
  attn, bias = request.param
  torch.manual_seed(0)
  config = transformers.ModernBertConfig(**TINY, norm_bias=bias, attention_bias=bias, mlp_bias=bias,
                                         attn_implementation=attn)
  model = transformers.ModernBertModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(tmp_path)
  return model, tmp_path


def _torch_hidden(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


@pytest.mark.parametrize("packing", [None, 22, 27], ids=["padded", "unpadded-exact", "unpadded-slack"])
def test_hidden_states_match_transformers(torch_folder, packing):
  """22 real tokens of 36: unpadded into exactly 22 rows, and into 27 with 5 spare."""
  model, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  assert config.layer_types == ("full_attention", "sliding_attention", "full_attention")
  ids, mask = _inputs()
  expected = _torch_hidden(model, ids, mask)
  got = np.asarray(ours(ids, mask, None, packing))
  real = mask.astype(bool)
  assert got.shape == (3, 12, 64) and got.dtype == np.float32
  assert np.abs(got[real] - expected[real]).max() <= 1e-4
  if packing:
    assert not got[~real].any()
  _, half = hf.load_backbone(folder, dtype=jnp.bfloat16)
  got_bf16 = np.asarray(half(ids, mask, None, packing))
  assert got_bf16.dtype == np.float32 and np.abs(got_bf16[real] - expected[real]).max() <= 0.1


def test_weight_map_covers_checkpoint_and_state_exactly(torch_folder):
  model, _ = torch_folder
  config = ModernBertConfig.from_hf(model.config.to_dict())
  wmap = weight_map(config)
  assert sorted(k for k, _, _ in wmap) == sorted(model.state_dict())
  params = nnx.state(ModernBert(config, rngs=nnx.Rngs(0)), nnx.Param)
  assert sorted(map(str, (p for p, _ in nnx.to_flat_state(params)))) == sorted(str(p) for _, p, _ in wmap)


def test_export_loads_back_in_transformers(torch_folder, tmp_path):
  model, folder = torch_folder
  config, ours = hf.load_backbone(folder)
  hf.export_backbone(ours, config, tmp_path / "export")
  reloaded = transformers.AutoModel.from_pretrained(tmp_path / "export").eval()
  ids, mask = _inputs(seed=1)
  real = mask.astype(bool)  # the reload runs sdpa, which differs from eager only at padded queries
  np.testing.assert_allclose(_torch_hidden(reloaded, ids, mask)[real], _torch_hidden(model, ids, mask)[real],
                             atol=1e-6)


def test_hub_style_config_reads_like_transformers():
  """Pre-v5 config.json: the layer pattern and RoPE bases are flat fields, no layer_types/rope_parameters."""
  old = dict(TINY, num_hidden_layers=5, global_attn_every_n_layers=3)
  ours = ModernBertConfig.from_hf(old)
  theirs = transformers.ModernBertConfig(**old)
  assert list(ours.layer_types) == theirs.layer_types
  assert ours.global_rope_theta == theirs.rope_parameters["full_attention"]["rope_theta"] == 1000.0
  assert ours.local_rope_theta == theirs.rope_parameters["sliding_attention"]["rope_theta"] == 50.0
  assert ModernBertConfig.from_hf(ours.to_hf()) == ours


def test_training_dropout_matches_transformers_with_the_same_masks(torch_folder):
  """embedding_dropout after the embeddings' norm; attention_dropout on the probabilities and after
  Wo; mlp_dropout before the MLP's Wo."""
  _, folder = torch_folder
  config_json = json.loads((folder / "config.json").read_text())
  rates = dict(embedding_dropout=0.1, attention_dropout=0.2, mlp_dropout=0.3)
  (folder / "config.json").write_text(json.dumps({**config_json, **rates}))
  config, ours = hf.load_backbone(folder)
  ids, mask = _inputs(seed=1)
  dropout = RecordingDropout(jax.random.key(5))
  got = np.asarray(ours(ids, mask, dropout=dropout))
  assert len(dropout.masks) == 1 + 3 * config.num_hidden_layers
  drawn = [(m == 0).mean() for m in dropout.masks[1:4]]
  assert abs(drawn[0] - 0.2) < 0.05 and abs(drawn[1] - 0.2) < 0.05 and abs(drawn[2] - 0.3) < 0.05
  training = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").train()
  with replaying(dropout.masks):
    expected = _torch_hidden(training, ids, mask)
  real = mask.astype(bool)
  assert np.abs(got[real] - expected[real]).max() <= 1e-4
