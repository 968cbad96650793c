"""The device mesh: axes (data, fsdp, tensor), sized from the config and the devices present.

Axis types are Auto (GSPMD propagation): parameters and the batch get NamedShardings, and
XLA propagates them through the step. A size of -1 takes whatever devices remain.
"""
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from .. import checks
from ..errors import InputError

AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  sizes = [mesh_config[a] for a in AXES]
  for axis, size in zip(AXES, sizes):
    if size != -1:
      checks.integer(size, f"config.mesh.{axis}", low=1)
  if sizes.count(-1) > 1:
    raise InputError("config.mesh", f"at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise InputError("config.mesh", f"{num_devices} devices do not split into {dict(zip(AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise InputError("config.mesh", f"{dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices; "
                     f"{num_devices} are present")
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  if len(devices) == jax.device_count():
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=(AxisType.Auto,) * 3)
