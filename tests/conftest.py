"""Shared fixtures: the real collections in ../shared/data, skipped with a reason when absent; retrax's CPU kernels."""
import os
import pathlib
import shutil

import jax
import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to ../shared/data; the test skips when the folder is absent (a fresh user's machine)."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real collections not found at {SHARED_DATA} (only CI and dev machines have ../shared)")
  return SHARED_DATA


@pytest.fixture
def cpu_kernels(monkeypatch):
  """retrax's XLA:CPU kernels, built and switched on (RETRAX_CPU_KERNELS=1, also where they do not
  pay off); the test skips off XLA:CPU or without a C++ compiler."""
  monkeypatch.setenv("RETRAX_CPU_KERNELS", "1")
  from retrax.xla_cpu import kernels as cpu_kernels
  if jax.default_backend() != "cpu":
    pytest.skip("retrax's kernels are XLA:CPU's")
  if shutil.which(os.environ.get("CXX", "g++")) is None:
    pytest.skip("no C++ compiler to build retrax's CPU kernels")
  assert cpu_kernels.available(), "retrax's CPU kernels did not build (the log says why)"
  return cpu_kernels
