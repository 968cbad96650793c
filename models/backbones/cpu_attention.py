"""Fused float32 attention on XLA:CPU: `cpu_attention.cc` as XLA FFI custom calls, forward and backward.

XLA:CPU runs attention as separate batched dots, transposes and softmax passes; this kernel does
one (batch, head) pair per task in cache, on the [B, L, heads, d] layout the projections give
(the formulas are in the .cc file). It is compiled on first use with the machine's C++ compiler
(`CXX`, default g++, `-O3 -march=native`) into `RETRAX_KERNEL_CACHE` (default
$XDG_CACHE_HOME/retrax/kernels or ~/.cache/retrax/kernels), keyed by the source, the compiler,
jax and the CPU's flags.
Without a compiler, or with RETRAX_CPU_ATTENTION=0, `attention.py`'s XLA path runs instead.
It runs on a single CPU device: a custom call has no sharding rule.
"""
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_FORWARD, _BACKWARD = "retrax_attention_forward", "retrax_attention_backward"


def _cpu_flags() -> str:
  try:
    return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
  except OSError:
    return ""


def _compile(compiler: str) -> pathlib.Path:
  """The shared library for this source, compiler, jaxlib and CPU, built once (atomically)."""
  include = jax.ffi.include_dir()
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
  key = hashlib.sha256("\0".join((_SOURCE.read_text(), compiler, version, " ".join(_FLAGS),
                                  jax.__version__, include, _cpu_flags())).encode()).hexdigest()[:16]
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "retrax" / "kernels"
  cache = pathlib.Path(os.environ.get("RETRAX_KERNEL_CACHE", default))
  library = cache / f"cpu_attention-{key}.so"
  if library.exists():
    return library
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as scratch:
    built = pathlib.Path(scratch) / library.name
    result = subprocess.run([compiler, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", str(built)],
                            capture_output=True, text=True)
    if result.returncode:
      raise RuntimeError(f"{compiler} failed on {_SOURCE}:\n{result.stderr[-4000:]}")
    os.replace(built, library)
  return library


@functools.cache
def available() -> bool:
  """Whether the kernel is built and registered (logs why not, once)."""
  if os.environ.get("RETRAX_CPU_ATTENTION", "1") == "0":
    return False
  compiler = os.environ.get("CXX", "g++")
  if shutil.which(compiler) is None:
    logging.warning("no C++ compiler %r: attention runs as XLA's separate ops on CPU (slower)", compiler)
    return False
  try:
    library = ctypes.cdll.LoadLibrary(str(_compile(compiler)))
  except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
    logging.warning("the fused CPU attention kernel did not build, XLA's ops run instead: %s", error)
    return False
  jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(library.RetraxAttentionForward), platform="cpu")
  jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(library.RetraxAttentionBackward), platform="cpu")
  return True


def applies(q, mask, dropped) -> bool:
  """float32 on one CPU device, a head dimension that is a multiple of 16, a padded-layout dropout
  mask (if any), and the kernel built."""
  return (jax.default_backend() == "cpu" and jax.device_count() == 1 and q.dtype == jnp.float32
          and q.shape[-1] % 16 == 0 and mask.dtype == jnp.bool_
          and (dropped is None or dropped.rows is None) and available())


def _attrs(q, threshold, keep_scale):
  return dict(scale=np.float32(1 / np.sqrt(q.shape[-1])), threshold=np.int64(threshold),
              keep_scale=np.float32(keep_scale))


def _forward(q, k, v, mask, key, threshold, keep_scale):
  b, l, heads, _ = q.shape
  out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, heads, l), jnp.float32))
  return jax.ffi.ffi_call(_FORWARD, out)(q, k, v, mask, key, **_attrs(q, threshold, keep_scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, mask, key, threshold, keep_scale):
  return _forward(q, k, v, mask, key, threshold, keep_scale)[0]


def _attention_fwd(q, k, v, mask, key, threshold, keep_scale):
  o, lse = _forward(q, k, v, mask, key, threshold, keep_scale)
  return o, (q, k, v, mask, key, o, lse)


def _attention_bwd(threshold, keep_scale, residuals, do):
  q, k, v, mask, key, o, lse = residuals
  out = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call(_BACKWARD, out)(q, k, v, mask, key, o, lse, do,
                                                **_attrs(q, threshold, keep_scale))
  return dq, dk, dv, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q, k, v, mask, dropped=None):
  """q, k, v [B, L, heads, d] float32; mask [B, Lq or 1, Lk] bool; dropped: `Dropout.mask`'s
  `Drawn` of shape [B, heads, Lq, Lk] (drawn in the kernel, never materialised), or None.
  Returns [B, L, heads, d]."""
  if dropped is None:
    return _attention(q, k, v, mask, jnp.zeros((2,), jnp.uint32), 0, 0.0)
  b, lq, heads, _ = q.shape
  if dropped.shape != (b, heads, lq, k.shape[1]):
    raise ValueError(f"attention dropout mask {dropped.shape}: expected {(b, heads, lq, k.shape[1])}")
  key = jax.random.key_data(dropped.key).reshape(-1)[:2].astype(jnp.uint32)
  return _attention(q, k, v, mask, key, dropped.threshold, float(dropped.scale))
