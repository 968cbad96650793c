"""The operations whose implementation depends on the backend, chosen here and nowhere else.

| operation | XLA:CPU, one device, float32 | GPU | elsewhere |
|---|---|---|---|
| `attention`, `token_attention` | retrax's fused kernel (`xla_cpu`, where it pays off: AVX-512), on packed tokens too | cuDNN's flash attention (bf16/fp16, right padding, no dropout) | XLA's ops (`models/backbones/attention.py`) |
| `layer_norm` | retrax's kernel | `nnx.LayerNorm` | `nnx.LayerNorm` |
| `dense_dot_general` (nnx.Linear's) | the weight gradient in two halves from 4096 rows | `lax.dot_general` | `lax.dot_general` |
| `jit` | XLA:CPU's compile options | XLA's defaults | XLA's defaults |
| `packs_in_place` (capacities to 15/16) | the kernels run | no | no |

The backend is read once, at the first call. RETRAX_CPU_KERNELS=1/0 forces the kernels on/off.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from .models.backbones import attention as xla_attention


@functools.cache
def backend() -> str:
  return jax.default_backend()


def _cpu():
  """The XLA:CPU package, on XLA:CPU; None elsewhere (it is never imported on TPU or GPU)."""
  if backend() != "cpu":
    return None
  from . import xla_cpu
  return xla_cpu


def jit(fun, **kwargs):
  """jax.jit(fun, **kwargs), with XLA:CPU's compile options on XLA:CPU."""
  cpu = _cpu()
  return jax.jit(fun, compiler_options=cpu.compiler_options() if cpu else None, **kwargs)


def packs_in_place() -> bool:
  """Whether attention takes packed token rows as they lie (no gather to the padded layout)."""
  cpu = _cpu()
  return bool(cpu and cpu.kernels_enabled())


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
  """nnx.Linear's `dot_general` for the backbones' dense layers."""
  cpu = _cpu()
  dot = cpu.dense_dot_general if cpu else jax.lax.dot_general
  return dot(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type,
             out_sharding=out_sharding)


def layer_norm(norm: nnx.LayerNorm, x):
  """norm(x)."""
  cpu = _cpu()
  return cpu.fused_layer_norm(norm, x) if cpu and cpu.layer_norm_applies(norm, x) else norm(x)


def _cudnn_applies(q, dropped, lengths) -> bool:
  head_dim = q.shape[-1]
  return (lengths is not None and dropped is None and backend() == "gpu"
          and q.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128)


def attention(q, k, v, mask, dropped=None, *, lengths=None):
  """q, k, v [B, L, heads, d]; mask [B, Lq or 1, Lk] (bool); dropped: `Dropout.mask`'s `Drawn`
  of shape [B, heads, Lq, Lk], or None; lengths [B]: each row's real tokens when `mask` is right
  padding alone (keys j < lengths), which lets cuDNN run it. Returns [B, L, heads, d] in v's dtype."""
  if _cudnn_applies(q, dropped, lengths):
    lengths = jnp.maximum(lengths.astype(jnp.int32), 1)  # an all-padding row attends to its first key
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
  cpu = _cpu()
  if cpu and cpu.attention_applies(q, mask, dropped):
    return cpu.fused_attention(q, k, v, mask, dropped)
  return xla_attention.attention(q, k, v, mask, dropped)


def token_attention(q, k, v, mask, lengths, layout, dropped=None):
  """Self-attention of `layout`'s token rows (`unpadding.Padded` or `Unpadded`): q, k, v [N, heads, d]
  → [N, heads, d]. mask [B, L or 1, L], lengths [B] (or None) and `dropped` as in `attention`. A
  packed layout (right padding; `Unpadded.starts`) runs on the tokens where they lie where
  `packs_in_place`; otherwise the tokens go to the padded [B, L] layout and back."""
  cpu = _cpu()
  if layout.starts is not None and cpu and cpu.attention_applies(q, mask, dropped):
    return cpu.packed_attention(q, k, v, mask, layout.starts, layout.lengths, dropped)
  padded = (layout.to_padded(t) for t in (q, k, v))
  return layout.to_tokens(attention(*padded, mask, dropped, lengths=lengths))
