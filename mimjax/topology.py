"""TPU slice names -> abstract devices to compile for, without the hardware.

Accepted names:
  JAX's topology names     v5e:4x4, v6e:2x2, v4:2x2x1, v5p:2x4x4 (chips along each axis)
  gcloud accelerator types v5litepod-16, v6e-16 (these count chips), v4-8, v5p-32 (these count
                           TensorCores: two per chip, so v4-8 is 4 chips and v5p-32 is 16)
  local                    this machine's devices
"""
import importlib.util
import os

from mimjax import errors
from mimjax import hardware


class TopologyError(errors.UserError, ValueError):
  """A --topology that names no TPU slice."""


def parse(name: str) -> hardware.Slice:
  """A TPU slice from a JAX topology name or a gcloud accelerator type."""
  try:
    tpu_slice = hardware.jax_slice(name) or hardware.gcloud_slice(name)
  except hardware.SliceError as e:
    raise TopologyError(f"--topology={name}: {e}") from None
  if tpu_slice is None:
    examples = lambda chips, name: ", ".join(
        getattr(hardware.Slice(t, chips, hardware.standard_shape(t, chips)), name)
        for t in hardware.TPUS.values())
    raise TopologyError(f"--topology={name!r} is not a TPU slice: use a JAX topology name "
                        f"({examples(4, 'jax_name')}), a gcloud accelerator type "
                        f"({examples(16, 'gcloud_name')}) or 'local'")
  if tpu_slice.shape is None:  # libtpu describes a slice by its shape
    raise TopologyError(f"--topology={name}: {tpu_slice.num_chips} chips: standard slice shapes "
                        "come in powers of two (1, 4, 8, 16, ...); name the shape instead, e.g. "
                        f"{tpu_slice.tpu.name}:{'x'.join(['N'] * tpu_slice.tpu.torus_axes)}")
  return tpu_slice


def devices(tpu_slice: hardware.Slice) -> list:
  """The slice's abstract TPU devices (jax.experimental.topologies), on a machine without TPUs.

  Call before anything else initializes JAX's backends: this forces the CPU backend for the
  rest of the process (nothing here runs on the TPU) and quiets libtpu's probing for TPU hosts.
  """
  import jax
  from jax.experimental import topologies

  if not jax.config.jax_platforms:  # a platform the user chose stays
    jax.config.update("jax_platforms", "cpu")
  # libtpu looks for a TPU VM's metadata and takes a lock meant for processes that own the
  # chips: neither applies to compiling for a described slice.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", tpu_slice.gcloud_name)
  if not has_libtpu():
    raise TopologyError(f"compiling for {tpu_slice.jax_name} needs libtpu: "
                        "pip install 'mimjax[tpu]' (jax[tpu] at jax's version)")
  config_name = tpu_slice.tpu.chip_config_name
  kwargs = {"chip_config_name": config_name} if config_name else {}
  try:
    return list(topologies.get_topology_desc(topology_name=tpu_slice.jax_name, platform="tpu",
                                             **kwargs).devices)
  except RuntimeError as e:
    raise TopologyError(f"libtpu cannot describe the slice {tpu_slice.jax_name}: "
                        f"{' '.join(str(e).split())[:300]}") from None


def has_libtpu() -> bool:
  """Whether libtpu (the `tpu` extra) is installed, or TPU_LIBRARY_PATH names one."""
  return (importlib.util.find_spec("libtpu") is not None
          or bool(os.environ.get("TPU_LIBRARY_PATH")))
