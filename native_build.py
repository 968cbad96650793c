"""Shared libraries compiled on first use from retrax's C++ sources, with the machine's compiler
(`CXX`, default g++).

A library lives in `RETRAX_KERNEL_CACHE` (default $XDG_CACHE_HOME/retrax/kernels or
~/.cache/retrax/kernels) under a name keyed by its sources, the compiler and its version, the
flags, the CPU's flags and whatever else the caller names; it is written atomically, once.
"""
import hashlib
import logging
import os
import shutil
import pathlib
import subprocess
import tempfile


def cpu_flags() -> str:
  try:
    return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
  except OSError:
    return ""


def cache_folder() -> pathlib.Path:
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "retrax" / "kernels"
  return pathlib.Path(os.environ.get("RETRAX_KERNEL_CACHE", default))


def shared_library(name: str, compiler: str, sources, flags, headers=(), key=()) -> pathlib.Path:
  """`name`-<key>.so built from `sources` (paths) with `flags`; raises RuntimeError with the
  compiler's message when it fails, subprocess.CalledProcessError when the compiler cannot run."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
  texts = [pathlib.Path(f).read_text() for f in (*sources, *headers)]
  digest = hashlib.sha256("\0".join((*texts, compiler, version, " ".join(flags), cpu_flags(), *key)).encode())
  cache = cache_folder()
  library = cache / f"{name}-{digest.hexdigest()[:16]}.so"
  if library.exists():
    return library
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as scratch:
    built = pathlib.Path(scratch) / library.name
    result = subprocess.run([compiler, *flags, *map(str, sources), "-o", str(built)], capture_output=True, text=True)
    if result.returncode:
      names = ", ".join(pathlib.Path(f).name for f in sources)
      raise RuntimeError(f"{compiler} failed on {names}:\n{result.stderr[-4000:]}")
    os.replace(built, library)
  return library


def optional_library(what: str, switch: str, otherwise: str, build) -> pathlib.Path | None:
  """build(compiler), the path of `what` built; None, logged with `otherwise` (what runs instead),
  when the environment sets `switch` to 0, there is no compiler, or the build fails."""
  if os.environ.get(switch, "1") == "0":
    return None
  compiler = os.environ.get("CXX", "g++")
  if shutil.which(compiler) is None:
    logging.warning("no C++ compiler %r: %s", compiler, otherwise)
    return None
  try:
    return build(compiler)
  except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
    logging.warning("%s did not build, %s: %s", what, otherwise, error)
    return None
