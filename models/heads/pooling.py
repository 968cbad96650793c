"""Sentence embeddings from token states: CLS, mean or last-token pooling, with optional L2 norm."""
import jax
import jax.numpy as jnp

MODES = ("cls", "mean", "lasttoken")


def pool(hidden, mask, mode: str):
  """hidden [B, L, H], mask [B, L] (right padded) to [B, H].

  cls: h_0;  mean: Σ_i m_i h_i / max(Σ_i m_i, 1e-9);  lasttoken: h_{Σ_i m_i − 1}.
  """
  mask = mask.astype(hidden.dtype)
  if mode == "cls":
    return hidden[:, 0]
  if mode == "mean":
    return (hidden * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1e-9)
  if mode == "lasttoken":
    last = jnp.maximum(mask.sum(1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"pooling {mode!r} is not one of {MODES}")


def l2_normalize(x, eps=1e-12):
  """x / max(‖x‖₂, eps), as torch.nn.functional.normalize; written x / √max(Σx², eps²) so that
  the gradient at x = 0 (an unpadded run's padding) is 0, not NaN."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))
