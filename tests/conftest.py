"""Shared fixtures: the real collections in ../shared/data, skipped with a reason when absent."""
import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to ../shared/data; the test skips when the folder is absent (a fresh user's machine)."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real collections not found at {SHARED_DATA} (only CI and dev machines have ../shared)")
  return SHARED_DATA
