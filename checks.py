"""Checks of single values (config keys, arguments): each returns the value or raises an InputError naming it."""
import math
import numbers

from .errors import InputError


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
  """An integer with low ≤ value ≤ high (either bound optional)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
      (low is not None and value < low) or (high is not None and value > high):
    bounds = f" from {low} to {high}" if low is not None and high is not None else \
        f" ≥ {low}" if low is not None else f" ≤ {high}" if high is not None else ""
    raise InputError(name, f"expected an integer{bounds}, got {value!r}")
  return int(value)


def number(value, name: str, *, above: float | None = None, at_least: float | None = None,
           below: float | None = None) -> float:
  """A finite real number with value > above, value ≥ at_least and value < below (each optional)."""
  ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        and (above is None or value > above) and (at_least is None or value >= at_least)
        and (below is None or value < below))
  if not ok:
    bounds = [f"> {above}" if above is not None else "", f"≥ {at_least}" if at_least is not None else "",
              f"< {below}" if below is not None else ""]
    detail = " and ".join(b for b in bounds if b)
    raise InputError(name, f"expected a finite number{' ' + detail if detail else ''}, got {value!r}")
  return float(value)


def choice(value, name: str, options) -> str:
  if value not in options:
    raise InputError(name, f"expected one of {list(options)}, got {value!r}")
  return value
