"""Multi-host start-up: jax.distributed.initialize() on multi-host TPU VMs, or when the config asks.

config.distributed.mode: "auto" initialises on a TPU VM with several workers
(TPU_WORKER_HOSTNAMES lists them) or when a coordinator address is given; "on" always
initialises (arguments left empty are auto-detected, as on a TPU pod slice); "off" never.
On CPU the cross-process collectives are gloo's.
"""
import os

import jax

from ..errors import InputError


def should_initialize(config) -> bool:
  mode = config.mode
  if mode not in ("auto", "on", "off"):
    raise InputError("config.distributed.mode", f"{mode!r}: expected 'auto', 'on' or 'off'")
  if mode != "auto":
    return mode == "on"
  workers = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  return len(workers) > 1 or bool(config.coordinator_address)


def initialize(config) -> None:
  if not should_initialize(config):
    return
  kwargs = {k: config[k] for k in ("coordinator_address", "num_processes", "process_id") if config[k] not in (None, "")}
  if jax.config.jax_platforms == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
