"""retrax's XLA:CPU kernels as XLA FFI custom calls: `cpu_attention.cc` and `cpu_layer_norm.cc`,
which share `cpu_kernels.h`.

They are compiled on first use into one library with the machine's C++ compiler (`CXX`, default
g++, `-O3 -march=native`) by `retrax.native_build`, keyed by the sources, the compiler, jax and
the CPU's flags.
Without a compiler, or with RETRAX_CPU_KERNELS=0, XLA's ops run instead (logged once).
They run on a single CPU device: a custom call has no sharding rule.
"""
import ctypes
import functools
import logging
import pathlib

import jax
import jax.numpy as jnp

from ... import native_build

_HERE = pathlib.Path(__file__).parent
_SOURCES = (_HERE / "cpu_attention.cc", _HERE / "cpu_layer_norm.cc")
_HEADER = _HERE / "cpu_kernels.h"
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
TARGETS = {"retrax_attention_forward": "RetraxAttentionForward",
           "retrax_attention_backward": "RetraxAttentionBackward",
           "retrax_layer_norm_forward": "RetraxLayerNormForward",
           "retrax_layer_norm_backward": "RetraxLayerNormBackward"}


def _compile(compiler: str) -> pathlib.Path:
  """The shared library for these sources, compiler, jaxlib and CPU, built once (native_build)."""
  include = jax.ffi.include_dir()
  return native_build.shared_library("retrax_cpu_kernels", compiler, _SOURCES, (*_FLAGS, f"-I{include}"),
                                     headers=(_HEADER,), key=(jax.__version__, include))


@functools.cache
def available() -> bool:
  """Whether the kernels are built and registered (logs why not, once)."""
  path = native_build.optional_library("retrax's CPU kernels", "RETRAX_CPU_KERNELS",
                                       "attention and layer norms run as XLA's ops on CPU (slower)", _compile)
  if path is None:
    return False
  try:
    library = ctypes.cdll.LoadLibrary(str(path))
  except OSError as error:
    logging.warning("retrax's CPU kernels did not load, XLA's ops run instead: %s", error)
    return False
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  return True


def one_cpu_device() -> bool:
  """Whether JAX runs on exactly one XLA:CPU device, where retrax's CPU-specific paths apply."""
  return jax.default_backend() == "cpu" and jax.device_count() == 1


def enabled() -> bool:
  """One CPU device, and the kernels built."""
  return one_cpu_device() and available()


def applies(*arrays) -> bool:
  """float32 arrays whose last dimension is a multiple of 16, and `enabled()`."""
  return all(a.dtype == jnp.float32 and a.shape[-1] % 16 == 0 for a in arrays) and enabled()
