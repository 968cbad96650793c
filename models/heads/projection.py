"""Token projections for multi-vector retrievers: a chain of layers, each PyLate's Dense or a gated one.

Dense (PyLate `models/Dense.py`):   y = act(W x + b) + r(x),
Gated (GLU, Shazeer 2020):          y = act(W_g x + b_g) ⊙ (W x + b) + r(x)   (SwiGLU: SiLU; GeGLU: GELU),
  r(x) = x where residual and in = out, R x (a learned bias-free matrix, PyLate's) where
  residual and in ≠ out, 0 without residual.

A chain of Dense layers is what PyLate saves as 1_Dense, 2_Dense, …; gated layers exist only in
retrax's format. Weights start as torch.nn.Linear's: U(−1/√in, 1/√in).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..backbones.bert import gelu
from ..partitioning import logical

ACTIVATIONS = {"identity": lambda x: x, "relu": jax.nn.relu, "gelu": gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}
# The activation_function strings sentence-transformers and PyLate write in a Dense config.json.
TORCH_ACTIVATIONS = {"identity": "torch.nn.modules.linear.Identity", "relu": "torch.nn.modules.activation.ReLU",
                     "gelu": "torch.nn.modules.activation.GELU", "silu": "torch.nn.modules.activation.SiLU",
                     "tanh": "torch.nn.modules.activation.Tanh"}


@dataclasses.dataclass(frozen=True)
class Layer:
  features: int
  activation: str = "identity"
  bias: bool = False
  residual: bool = False
  gated: bool = False

  def __post_init__(self):
    if isinstance(self.features, bool) or not isinstance(self.features, int) or self.features < 1:
      raise ValueError(f"projection layer features {self.features!r}: expected an integer ≥ 1")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"projection activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
    for name in ("bias", "residual", "gated"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"projection layer {name}: expected true or false, got {getattr(self, name)!r}")


def _linear(din, dout, bias, rngs):
  bound = 1 / din ** 0.5
  torch_like = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
  return nnx.Linear(din, dout, use_bias=bias, rngs=rngs, kernel_init=logical(torch_like, "embed", None),
                    bias_init=logical(torch_like, None))


class ProjectionLayer(nnx.Module):

  def __init__(self, din: int, layer: Layer, *, rngs: nnx.Rngs):
    self.layer = layer
    self.linear = _linear(din, layer.features, layer.bias, rngs)
    self.gate = _linear(din, layer.features, layer.bias, rngs) if layer.gated else None
    self.residual = _linear(din, layer.features, False, rngs) if layer.residual and din != layer.features else None

  def weight_map(self) -> list[tuple[str, tuple, bool]]:
    """(PyLate Dense key, path in this layer's state, transpose): hf.assign's and hf.tensors_of's map."""
    out = [("linear.weight", ("linear", "kernel"), True)]
    if self.layer.bias:
      out.append(("linear.bias", ("linear", "bias"), False))
    if self.residual is not None:
      out.append(("residual.weight", ("residual", "kernel"), True))
    return out

  def __call__(self, x):
    act = ACTIVATIONS[self.layer.activation]
    y = act(self.gate(x)) * self.linear(x) if self.gate is not None else act(self.linear(x))
    if self.layer.residual:
      y = y + (self.residual(x) if self.residual is not None else x)
    return y


class Projection(nnx.Module):
  """[…, din] → […, layers[-1].features] through the chain."""

  def __init__(self, din: int, layers: tuple[Layer, ...], *, rngs: nnx.Rngs):
    self.layers = nnx.List([])
    for layer in layers:
      self.layers.append(ProjectionLayer(din, layer, rngs=rngs))
      din = layer.features

  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return x
