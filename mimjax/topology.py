"""TPU slice names -> abstract devices to compile for, without the hardware.

Accepted names:
  JAX's topology names     v5e:4x4, v6e:2x2, v4:2x2x1, v5p:2x4x4 (chips along each axis)
  gcloud accelerator types v5litepod-16, v6e-16 (these count chips), v4-8, v5p-32 (these count
                           TensorCores: two per chip, so v4-8 is 4 chips and v5p-32 is 16)
  local                    this machine's devices
"""
import dataclasses
import importlib.util
import os
import re

from mimjax import errors

# gcloud type prefix -> (JAX generation name, TensorCores counted per chip)
_GCLOUD = {"v5litepod": ("v5e", 1), "v6e": ("v6e", 1), "v4": ("v4", 2), "v5p": ("v5p", 2)}
_TWO_D = ("v5e", "v6e")  # 2D tori; v4 and v5p are 3D
_JAX_NAME = re.compile(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})")
_GCLOUD_NAME = re.compile(r"(v5litepod|v6e|v4|v5p)-(\d+)")


class TopologyError(errors.UserError, ValueError):
  """A --topology that names no TPU slice."""


@dataclasses.dataclass(frozen=True)
class Slice:
  generation: str  # v4, v5e, v5p, v6e
  shape: tuple[int, ...]  # chips along each axis

  @property
  def jax_name(self) -> str:
    return f"{self.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def num_chips(self) -> int:
    n = 1
    for d in self.shape:
      n *= d
    return n

  @property
  def gcloud_name(self) -> str:
    prefix = {"v5e": "v5litepod"}.get(self.generation, self.generation)
    per_chip = _GCLOUD[prefix][1]
    return f"{prefix}-{self.num_chips * per_chip}"


def _shape_for(generation: str, chips: int) -> tuple[int, ...]:
  """The standard slice shape of `chips` chips (v5e-16 is 4x4, v5p-32 is 2x2x4, ...)."""
  if chips < 1 or chips & (chips - 1):
    raise TopologyError(f"{chips} chips: TPU slices come in powers of two (1, 4, 8, 16, ...)")
  if generation in _TWO_D:
    rows = 1 << (chips.bit_length() - 1) // 2
    return (rows, chips // rows)
  if chips < 4:
    return (1, 1, chips)
  # 2x2x1, then z doubles to 2x2x2 and 2x2x4, then y, x, z, ... (4x4x4 = 64 chips, ...)
  shape, left, axis = [2, 2, 1], chips // 4, 2
  while left > 1:
    shape[axis] *= 2
    left //= 2
    if shape[2] >= 4:
      axis = (axis - 1) % 3
  return tuple(shape)


def parse(name: str) -> Slice:
  """A TPU slice from a JAX topology name or a gcloud accelerator type."""
  match = _JAX_NAME.fullmatch(name)
  if match:
    generation, dims = match.groups()
    shape = tuple(int(d) for d in dims.split("x"))
    if len(shape) != (2 if generation in _TWO_D else 3):
      raise TopologyError(f"--topology={name}: {generation} slices have "
                          f"{2 if generation in _TWO_D else 3} axes, e.g. "
                          f"{'v5e:4x4' if generation in _TWO_D else 'v4:2x2x1'}")
    return Slice(generation, shape)
  match = _GCLOUD_NAME.fullmatch(name)
  if match:
    prefix, count = match.group(1), int(match.group(2))
    generation, per_chip = _GCLOUD[prefix]
    if count % per_chip:
      raise TopologyError(f"--topology={name}: {prefix} types count TensorCores, two per chip: "
                          "use an even number (v4-8 is 4 chips)")
    return Slice(generation, _shape_for(generation, count // per_chip))
  raise TopologyError(
      f"--topology={name!r} is not a TPU slice: use a JAX topology name (v5e:4x4, v4:2x2x1, "
      "v5p:2x2x2, v6e:2x2), a gcloud accelerator type (v5litepod-16, v4-8, v5p-32, v6e-16) "
      "or 'local'")


def devices(tpu_slice: Slice) -> list:
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
  kwargs = {"chip_config_name": "megacore"} if tpu_slice.generation == "v4" else {}
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
