"""BERT-family encoders (BERT, MiniLM, BGE, E5, RoBERTa, XLM-RoBERTa) in Flax NNX.

Post-norm transformer (Devlin et al., 2019):
  h = LN(x + Attn(x));  y = LN(h + W2 act(W1 h))
RoBERTa/XLM-R differ only in position ids, which start after the padding index:
  pos_i = padding_idx + cumsum(ids != pad)_i  for real tokens, padding_idx for pads.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from . import unpadding
from ... import ops
from ..dropout import Dropout, check_rates
from ..partitioning import logical


@jax.custom_vjp
def gelu(x):
  """x Φ(x) = x (1 + erf(x / √2)) / 2, as torch computes it (jax.nn.gelu's erfc form splits into
  three passes on XLA:CPU). ∂/∂x = Φ(x) + x φ(x) is recomputed from x in the backward, behind an
  optimization barrier, so the forward is one pass and keeps x alone: otherwise XLA merges the two
  erf(x / √2) into one stored array, and the forward takes two passes (MiniLM step on XLA:CPU:
  GELU's passes 416 → 329 ms)."""
  return 0.5 * x * (1 + jax.lax.erf(x * (1 / math.sqrt(2))))


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  x = jax.lax.optimization_barrier(x)
  cdf = 0.5 * (1 + jax.lax.erf(x * (1 / math.sqrt(2))))
  pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
  return (g * (cdf + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT/RoBERTa config.json that the forward pass uses."""
  model_type: str
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1

  @classmethod
  def from_hf(cls, hf: dict) -> "BertConfig":
    if hf.get("hidden_act", "gelu") not in ACTIVATIONS:
      raise ValueError(f"hidden_act {hf['hidden_act']!r} is not one of {sorted(ACTIVATIONS)}")
    check_rates(hf, ("hidden_dropout_prob", "attention_probs_dropout_prob"))
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r}: only 'absolute' is supported")
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: hf[k] for k in names if k in hf and hf[k] is not None})

  def to_hf(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def is_roberta(self) -> bool:
    return self.model_type in ROBERTA_TYPES


def _dense(din, dout, axes, *, dtype, rngs):
  return nnx.Linear(
      din, dout, dtype=dtype, param_dtype=jnp.float32, rngs=rngs, dot_general=ops.dense_dot_general,
      kernel_init=logical(nnx.initializers.normal(0.02), *axes),
      bias_init=logical(nnx.initializers.zeros_init(), axes[-1]))


def _layer_norm(dim, eps, *, dtype, rngs):
  return nnx.LayerNorm(
      dim, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
      scale_init=logical(nnx.initializers.ones_init(), "embed"),
      bias_init=logical(nnx.initializers.zeros_init(), "embed"))


class BertLayer(nnx.Module):

  def __init__(self, c: BertConfig, *, dtype, rngs):
    h, m = c.hidden_size, c.intermediate_size
    self.num_heads = c.num_attention_heads
    self.act = ACTIVATIONS[c.hidden_act]
    self.hidden_dropout, self.attention_dropout = c.hidden_dropout_prob, c.attention_probs_dropout_prob
    self.query = _dense(h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.key = _dense(h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.value = _dense(h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
    self.attn_out = _dense(h, h, ("heads", "embed"), dtype=dtype, rngs=rngs)
    self.attn_norm = _layer_norm(h, c.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.mlp_in = _dense(h, m, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.mlp_out = _dense(m, h, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.mlp_norm = _layer_norm(h, c.layer_norm_eps, dtype=dtype, rngs=rngs)

  def __call__(self, x, mask, lengths, layout, dropout: Dropout):
    """x [N, H]: `layout`'s token rows (every position, or the real tokens)."""
    b, l = mask.shape[0], mask.shape[-1]
    split = lambda t: t.reshape(t.shape[0], self.num_heads, -1)
    dropped = dropout.mask((b, self.num_heads, l, l), self.attention_dropout)
    ctx = ops.token_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask, lengths, layout,
                          dropped)
    attended = self.attn_out(ctx.reshape(x.shape[0], -1))
    x = ops.layer_norm(self.attn_norm, x + dropout(attended, self.hidden_dropout, layout.rows))
    return ops.layer_norm(self.mlp_norm, x + dropout(self.mlp_out(self.act(self.mlp_in(x))), self.hidden_dropout, layout.rows))


class Bert(nnx.Module):
  """Token ids [B, L] and mask [B, L] (right padding) to the last hidden states [B, L, H] (float32).

  `packing` (`unpadding.layout`: an int capacity or a pack index) runs the per-token layers on the
  real tokens only (attention too, where `ops.packs_in_place`); hidden states at padding are then
  0. `dropout` (training only): Hugging Face's sites, hidden_dropout_prob after the embeddings'
  norm and after each block's output projection, attention_probs_dropout_prob on the attention
  probabilities.
  """

  def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    c = self.config = config
    embed = functools.partial(
        nnx.Embed, features=c.hidden_size, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
        embedding_init=logical(nnx.initializers.normal(0.02), "vocab", "embed"))
    self.word_embeddings = embed(c.vocab_size)
    self.position_embeddings = embed(c.max_position_embeddings)
    self.token_type_embeddings = embed(c.type_vocab_size)
    self.embed_norm = _layer_norm(c.hidden_size, c.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([BertLayer(c, dtype=dtype, rngs=rngs) for _ in range(c.num_hidden_layers)])

  def embeddings(self, input_ids, token_type_ids, layout):
    """Word + position + token-type embeddings of each token in `layout`, in the compute dtype.

    Rows are read from the float32 tables, so their gradients add up in float32. Absolute
    positions are a slice of their table and token types a one-hot product: a gather's
    backward scatter would pile every token onto a few rows (all onto type 0), which took 150
    of 290 ms in a BERT-base bfloat16 step on an H100."""
    c, dtype = self.config, self.word_embeddings.dtype
    rows = lambda table, ids: jnp.take(table[...], layout.to_tokens(ids), axis=0).astype(dtype)
    if c.is_roberta:
      real = (input_ids != c.pad_token_id).astype(jnp.int32)
      positions = rows(self.position_embeddings.embedding, jnp.cumsum(real, axis=1) * real + c.pad_token_id)
    else:
      table = self.position_embeddings.embedding[:input_ids.shape[1]].astype(dtype)
      positions = layout.to_tokens(jnp.broadcast_to(table, (*input_ids.shape, c.hidden_size)))
    types = jax.nn.one_hot(layout.to_tokens(token_type_ids), c.type_vocab_size, dtype=dtype)
    return (rows(self.word_embeddings.embedding, input_ids) + positions
            + types @ self.token_type_embeddings.embedding[...].astype(dtype))

  def __call__(self, input_ids, attention_mask, token_type_ids=None, packing=None,
               dropout: Dropout | None = None):
    dropout = dropout or Dropout.off()
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    layout = unpadding.layout(attention_mask, packing)
    x = dropout(ops.layer_norm(self.embed_norm, self.embeddings(input_ids, token_type_ids, layout)), self.config.hidden_dropout_prob,
                layout.rows)
    mask, lengths = attention_mask.astype(bool)[:, None, :], attention_mask.sum(-1)
    for layer in self.layers:
      x = layer(x, mask, lengths, layout, dropout)
    return layout.to_padded(x.astype(jnp.float32))


TOKEN_EMBEDDINGS = "word_embeddings"  # the token embedding table's attribute (hf.resize_vocab)


def weight_map(config: BertConfig) -> list[tuple[str, tuple, bool]]:
  """(Hugging Face key without the 'bert.'/'roberta.' prefix, path in the NNX state, transpose)."""
  def linear(hf, path):
    return [(f"{hf}.weight", path + ("kernel",), True), (f"{hf}.bias", path + ("bias",), False)]

  def norm(hf, path):
    return [(f"{hf}.weight", path + ("scale",), False), (f"{hf}.bias", path + ("bias",), False)]

  out = [(f"embeddings.{n}.weight", (n, "embedding"), False)
         for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
  out += norm("embeddings.LayerNorm", ("embed_norm",))
  for i in range(config.num_hidden_layers):
    hf, ours = f"encoder.layer.{i}", ("layers", i)
    for n in ("query", "key", "value"):
      out += linear(f"{hf}.attention.self.{n}", ours + (n,))
    out += linear(f"{hf}.attention.output.dense", ours + ("attn_out",))
    out += norm(f"{hf}.attention.output.LayerNorm", ours + ("attn_norm",))
    out += linear(f"{hf}.intermediate.dense", ours + ("mlp_in",))
    out += linear(f"{hf}.output.dense", ours + ("mlp_out",))
    out += norm(f"{hf}.output.LayerNorm", ours + ("mlp_norm",))
  return out
