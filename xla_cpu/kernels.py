"""retrax's XLA:CPU kernels as XLA FFI custom calls: `attention.cc` and `layer_norm.cc`, which
share `kernels.h`.

They are compiled on first use into one library with the machine's C++ compiler (`CXX`, default
g++, `-O3` and `build.target_flags()`: `-march=native` on x86-64, AVX2 or AVX-512; `-mcpu=native`
on aarch64) by `build`, keyed by the sources, the compiler, jax and the CPU's flags.
They run where they pay off: on x86-64 with AVX-512, where a 16-float vector is one register
(on AVX2 alone they build, and run about 3x slower than XLA's ops; measured in BENCHMARKS.md).
RETRAX_CPU_KERNELS=1 forces them, =0 turns them off. Without a compiler, or after a failed build
(remembered), XLA's ops run instead (logged once).
They run on a single CPU device: a custom call has no sharding rule.
"""
import ctypes
import functools
import logging
import os
import pathlib

import jax
import jax.numpy as jnp

from . import build

_HERE = pathlib.Path(__file__).parent
_SOURCES = (_HERE / "attention.cc", _HERE / "layer_norm.cc")
_HEADER = _HERE / "kernels.h"
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
TARGETS = {"retrax_attention_forward": "RetraxAttentionForward",
           "retrax_attention_backward": "RetraxAttentionBackward",
           "retrax_layer_norm_forward": "RetraxLayerNormForward",
           "retrax_layer_norm_backward": "RetraxLayerNormBackward"}


def _compile(compiler: str) -> pathlib.Path:
  """The shared library for these sources, compiler, jaxlib and CPU, built once (`build`)."""
  include = jax.ffi.include_dir()
  flags = (*_FLAGS, *build.target_flags(), f"-I{include}")
  return build.shared_library("retrax_cpu_kernels", compiler, _SOURCES, flags,
                              headers=(_HEADER,), key=(jax.__version__, include))


@functools.cache
def available() -> bool:
  """Whether the kernels are built and registered (logs why not, once)."""
  path = build.optional_library("retrax's CPU kernels", "RETRAX_CPU_KERNELS",
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


def pay_off() -> bool:
  """RETRAX_CPU_KERNELS=1, or unset on a CPU with AVX-512 (logs once when they do not)."""
  switch = os.environ.get("RETRAX_CPU_KERNELS")
  if switch is not None:
    return switch == "1"
  if " avx512f" in build.cpu_flags():
    return True
  _log_no_avx512()
  return False


@functools.cache
def _log_no_avx512() -> None:
  logging.info("this CPU has no AVX-512: attention and layer norms run as XLA's ops, which are faster "
               "here than retrax's kernels (RETRAX_CPU_KERNELS=1 forces the kernels)")


def enabled() -> bool:
  """One CPU device, kernels that pay off, and built."""
  return one_cpu_device() and pay_off() and available()


def applies(*arrays) -> bool:
  """float32 arrays whose last dimension is a multiple of 16, and `enabled()`."""
  return all(a.dtype == jnp.float32 and a.shape[-1] % 16 == 0 for a in arrays) and enabled()
