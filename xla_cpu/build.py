"""Shared libraries compiled on first use from retrax's C++ sources, with the machine's compiler
(`CXX`, default g++).

A library lives in `RETRAX_KERNEL_CACHE` (default $XDG_CACHE_HOME/retrax/kernels or
~/.cache/retrax/kernels) under a name keyed by its sources, the compiler and its version, the
flags, the CPU's flags and whatever else the caller names; it is written atomically, once. A
build that fails is remembered the same way (`<name>.failed`, holding the compiler's first
error), so a machine whose compiler cannot build it pays for the attempt once, not in every
process.
"""
import functools
import hashlib
import logging
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile

FIRST_ERROR_LINES = 12


@functools.cache
def cpu_flags() -> str:
  """The `flags` line of /proc/cpuinfo ("" where there is none)."""
  try:
    return next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
  except OSError:
    return ""


def target_flags() -> tuple[str, ...]:
  """The code-generation flags for this machine: RETRAX_CPU_MARCH (x86-64, default native, e.g.
  x86-64-v3 for AVX2 alone) or -mcpu=native (aarch64). RuntimeError on other processors."""
  machine = platform.machine().lower()
  if machine in ("x86_64", "amd64"):
    return (f"-march={os.environ.get('RETRAX_CPU_MARCH', 'native')}", "-Wno-psabi")
  if machine in ("aarch64", "arm64"):
    return ("-mcpu=native",)
  raise RuntimeError(f"retrax's native code builds for x86-64 and aarch64, not {platform.machine()}")


def cache_folder() -> pathlib.Path:
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "retrax" / "kernels"
  return pathlib.Path(os.environ.get("RETRAX_KERNEL_CACHE", default))


def first_error(stderr: str) -> str:
  """The compiler's first error and the lines after it (warnings before it left out)."""
  lines = stderr.splitlines()
  start = next((i for i, line in enumerate(lines) if re.search(r"\berror\b", line)), 0)
  return "\n".join(lines[start:start + FIRST_ERROR_LINES])


def _write_atomically(path: pathlib.Path, text: str) -> None:
  with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as scratch:
    scratch.write(text)
  os.replace(scratch.name, path)


def shared_library(name: str, compiler: str, sources, flags, headers=(), key=()) -> pathlib.Path:
  """`name`-<key>.so built from `sources` (paths) with `flags`; raises RuntimeError with the
  compiler's first error when it fails, now or in an earlier process (the same key),
  subprocess.CalledProcessError when the compiler cannot run."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
  texts = [pathlib.Path(f).read_text() for f in (*sources, *headers)]
  digest = hashlib.sha256("\0".join((*texts, compiler, version, " ".join(flags), cpu_flags(), *key)).encode())
  cache = cache_folder()
  library = cache / f"{name}-{digest.hexdigest()[:16]}.so"
  failed = library.with_suffix(".failed")
  if library.exists():
    return library
  names = ", ".join(pathlib.Path(f).name for f in sources)
  if failed.exists():
    raise RuntimeError(f"{compiler} failed on {names} before (remembered in {failed}):\n{failed.read_text()}")
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as scratch:
    built = pathlib.Path(scratch) / library.name
    result = subprocess.run([compiler, *flags, *map(str, sources), "-o", str(built)], capture_output=True, text=True)
    if result.returncode:
      error = first_error(result.stderr)
      _write_atomically(failed, error)
      raise RuntimeError(f"{compiler} failed on {names}:\n{error}")
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
