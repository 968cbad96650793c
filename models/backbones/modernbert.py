"""ModernBERT encoder (Warner et al., 2024, arXiv:2412.13663) in Flax NNX.

Pre-norm transformer without absolute positions (layer 0 has no attention norm):
  h = x + Wo Attn(RoPE(Wqkv LN(x)));  y = h + Wo (act(u) ⊙ g),  [u | g] = Wi LN(h)
embeddings LN(E[ids]) in, final LN out. Layer i is global when i % global_attn_every_n_layers
== 0 and local otherwise: a local query attends only to keys with |i − j| ≤ local_attention // 2,
and each kind has its own RoPE base (global_rope_theta, local_rope_theta).

Attention masks padding (as transformers' sdpa/eager paths do). With `packing` set, the layers
run unpadded (`unpadding.py`), on the real tokens only, as transformers' flash-attention path
does; attention then gathers them to the padded [B, L] layout, except where `ops.packs_in_place` (retrax's XLA:CPU
kernel takes them packed).
"""
import dataclasses

import jax.numpy as jnp
from flax import nnx

from . import unpadding
from ... import ops
from .bert import ACTIVATIONS
from ..dropout import Dropout, check_rates
from ..partitioning import logical

GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
  """The fields of a Hugging Face ModernBERT config.json that the forward pass uses.

  transformers 5 writes `layer_types` and `rope_parameters[type]["rope_theta"]`; older
  config.json files (the Hub's) have `global_attn_every_n_layers` and `global_rope_theta` /
  `local_rope_theta` instead. `from_hf` reads both.
  """
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  layer_types: tuple[str, ...]
  global_rope_theta: float = 160_000.0
  local_rope_theta: float = 10_000.0
  local_attention: int = 128
  max_position_embeddings: int = 8192
  hidden_activation: str = "gelu"
  norm_eps: float = 1e-5
  norm_bias: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  pad_token_id: int = 50283
  bos_token_id: int = 50281
  eos_token_id: int = 50282
  cls_token_id: int = 50281
  sep_token_id: int = 50282
  embedding_dropout: float = 0.0
  attention_dropout: float = 0.0
  mlp_dropout: float = 0.0

  @classmethod
  def from_hf(cls, hf: dict) -> "ModernBertConfig":
    if hf.get("hidden_activation", "gelu") not in ACTIVATIONS:
      raise ValueError(f"hidden_activation {hf['hidden_activation']!r} is not one of {sorted(ACTIVATIONS)}")
    check_rates(hf, ("embedding_dropout", "attention_dropout", "mlp_dropout"))
    if hf.get("rope_scaling"):
      raise ValueError(f"rope_scaling {hf['rope_scaling']!r}: only plain RoPE is supported")
    rope = hf.get("rope_parameters") or {}
    for kind, params in rope.items():
      if (params or {}).get("rope_type", "default") != "default":
        raise ValueError(f"rope_parameters[{kind!r}] rope_type {params['rope_type']!r}: only 'default' is supported")
    every = hf.get("global_attn_every_n_layers", 3)
    types = hf.get("layer_types") or [LOCAL if i % every else GLOBAL for i in range(hf["num_hidden_layers"])]
    if set(types) - {GLOBAL, LOCAL}:
      raise ValueError(f"layer_types {types!r}: expected only {GLOBAL!r} and {LOCAL!r}")
    thetas = {}
    for field, kind in (("global_rope_theta", GLOBAL), ("local_rope_theta", LOCAL)):
      theta = (rope.get(kind) or {}).get("rope_theta", hf.get(field))
      if theta is not None:
        thetas[field] = theta
    names = [f.name for f in dataclasses.fields(cls)]
    given = {k: hf[k] for k in names if k in hf and hf[k] is not None}
    return cls(**{**given, **thetas, "layer_types": tuple(types)})

  def to_hf(self) -> dict:
    out = dataclasses.asdict(self)
    out["layer_types"] = list(self.layer_types)
    out["rope_parameters"] = {GLOBAL: {"rope_type": "default", "rope_theta": out.pop("global_rope_theta")},
                              LOCAL: {"rope_type": "default", "rope_theta": out.pop("local_rope_theta")}}
    return {"model_type": "modernbert", **out}


def _dense(din, dout, axes, use_bias, *, dtype, rngs):
  return nnx.Linear(
      din, dout, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
      dot_general=ops.dense_dot_general,
      kernel_init=logical(nnx.initializers.normal(0.02), *axes),
      bias_init=logical(nnx.initializers.zeros_init(), axes[-1]))


def _layer_norm(c: ModernBertConfig, *, dtype, rngs):
  return nnx.LayerNorm(
      c.hidden_size, epsilon=c.norm_eps, use_bias=c.norm_bias, dtype=dtype, param_dtype=jnp.float32,
      rngs=rngs, scale_init=logical(nnx.initializers.ones_init(), "embed"),
      bias_init=logical(nnx.initializers.zeros_init(), "embed"))


def rope(length, dim, theta):
  """(cos, sin) [L, d] of angles p·θ^(−2i/d), i < d/2, each half repeated (rotate-half layout)."""
  inv_freq = 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
  """x cos + rotate_half(x) sin over x [N, heads, d] with each token's cos, sin [N, d],
  rotate_half([a, b]) = [−b, a], in float32."""
  xf = x.astype(jnp.float32)
  a, b = jnp.split(xf, 2, axis=-1)
  return (xf * cos[:, None] + jnp.concatenate([-b, a], axis=-1) * sin[:, None]).astype(x.dtype)


class ModernBertLayer(nnx.Module):

  def __init__(self, c: ModernBertConfig, index: int, *, dtype, rngs):
    h, m = c.hidden_size, c.intermediate_size
    self.num_heads = c.num_attention_heads
    self.kind = c.layer_types[index]
    self.act = ACTIVATIONS[c.hidden_activation]
    self.attention_dropout, self.mlp_dropout = c.attention_dropout, c.mlp_dropout
    self.attn_norm = _layer_norm(c, dtype=dtype, rngs=rngs) if index else None
    self.qkv = _dense(h, 3 * h, ("embed", "heads"), c.attention_bias, dtype=dtype, rngs=rngs)
    self.attn_out = _dense(h, h, ("heads", "embed"), c.attention_bias, dtype=dtype, rngs=rngs)
    self.mlp_norm = _layer_norm(c, dtype=dtype, rngs=rngs)
    self.mlp_in = _dense(h, 2 * m, ("embed", "mlp"), c.mlp_bias, dtype=dtype, rngs=rngs)
    self.mlp_out = _dense(m, h, ("mlp", "embed"), c.mlp_bias, dtype=dtype, rngs=rngs)

  def __call__(self, x, masks, ropes, layout, dropout: Dropout):
    """x [N, H]: `layout`'s token rows (every position, or the real tokens); ropes: each token's."""
    y = self.attn_norm(x) if self.attn_norm is not None else x
    q, k, v = (t[:, 0] for t in jnp.split(self.qkv(y).reshape(x.shape[0], 3, self.num_heads, -1), 3, axis=1))
    cos, sin = ropes[self.kind]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    mask, lengths = masks[self.kind]
    b, l = mask.shape[0], mask.shape[-1]
    dropped = dropout.mask((b, self.num_heads, l, l), self.attention_dropout)
    ctx = ops.token_attention(q, k, v, mask, lengths, layout, dropped).reshape(x.shape)
    x = x + dropout(self.attn_out(ctx), self.attention_dropout, layout.rows)
    u, g = jnp.split(self.mlp_in(self.mlp_norm(x)), 2, axis=-1)
    return x + self.mlp_out(dropout(self.act(u) * g, self.mlp_dropout, layout.rows))


class ModernBert(nnx.Module):
  """Token ids [B, L] and mask [B, L] to the last hidden states [B, L, H] (float32); no token types.

  `packing` (`unpadding.layout`: an int capacity or a pack index) runs the per-token layers unpadded
  (attention too, where `ops.packs_in_place`); hidden states at padding are then 0. `dropout`
  (training only): Hugging Face's sites, embedding_dropout after the embeddings' norm,
  attention_dropout on the attention probabilities and after the attention's output projection,
  mlp_dropout before the MLP's.
  """

  def __init__(self, config: ModernBertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    c = self.config = config
    self.tok_embeddings = nnx.Embed(
        c.vocab_size, c.hidden_size, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
        embedding_init=logical(nnx.initializers.normal(0.02), "vocab", "embed"))
    self.embed_norm = _layer_norm(c, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([ModernBertLayer(c, i, dtype=dtype, rngs=rngs) for i in range(c.num_hidden_layers)])
    self.final_norm = _layer_norm(c, dtype=dtype, rngs=rngs)

  def __call__(self, input_ids, attention_mask, token_type_ids=None, packing=None,
               dropout: Dropout | None = None):
    """`token_type_ids` is accepted for a common signature with Bert and ignored."""
    dropout = dropout or Dropout.off()
    c, l = self.config, input_ids.shape[1]
    keys = attention_mask.astype(bool)[:, None, :]
    pos = jnp.arange(l)
    band = jnp.abs(pos[:, None] - pos[None, :]) <= c.local_attention // 2
    masks = {GLOBAL: (keys, attention_mask.sum(-1)), LOCAL: (keys & band, None)}  # (mask, lengths if padding alone)
    head_dim = c.hidden_size // c.num_attention_heads
    layout = unpadding.layout(attention_mask, packing)
    per_token = lambda table: layout.to_tokens(jnp.broadcast_to(table, (*input_ids.shape, head_dim)))
    ropes = {kind: tuple(map(per_token, rope(l, head_dim, theta)))
             for kind, theta in ((GLOBAL, c.global_rope_theta), (LOCAL, c.local_rope_theta))}
    x = dropout(self.embed_norm(self.tok_embeddings(layout.to_tokens(input_ids))), c.embedding_dropout, layout.rows)
    for layer in self.layers:
      x = layer(x, masks, ropes, layout, dropout)
    return layout.to_padded(self.final_norm(x).astype(jnp.float32))


TOKEN_EMBEDDINGS = "tok_embeddings"  # the token embedding table's attribute (hf.resize_vocab)


def weight_map(config: ModernBertConfig) -> list[tuple[str, tuple, bool]]:
  """(Hugging Face key without the 'model.' prefix, path in the NNX state, transpose)."""
  def linear(hf, path, use_bias):
    return [(f"{hf}.weight", path + ("kernel",), True)] + [(f"{hf}.bias", path + ("bias",), False)] * use_bias

  def norm(hf, path):
    return [(f"{hf}.weight", path + ("scale",), False)] + [(f"{hf}.bias", path + ("bias",), False)] * config.norm_bias

  out = [("embeddings.tok_embeddings.weight", ("tok_embeddings", "embedding"), False)]
  out += norm("embeddings.norm", ("embed_norm",))
  for i in range(config.num_hidden_layers):
    hf, ours = f"layers.{i}", ("layers", i)
    if i:
      out += norm(f"{hf}.attn_norm", ours + ("attn_norm",))
    out += linear(f"{hf}.attn.Wqkv", ours + ("qkv",), config.attention_bias)
    out += linear(f"{hf}.attn.Wo", ours + ("attn_out",), config.attention_bias)
    out += norm(f"{hf}.mlp_norm", ours + ("mlp_norm",))
    out += linear(f"{hf}.mlp.Wi", ours + ("mlp_in",), config.mlp_bias)
    out += linear(f"{hf}.mlp.Wo", ours + ("mlp_out",), config.mlp_bias)
  out += norm("final_norm", ("final_norm",))
  return out
