"""Hardware facts: one entry per TPU generation and per GPU board, and a TPU `Slice`.

Everything mimjax knows about accelerators is written here and read from here: the names gcloud
and JAX give a TPU generation, how its slices are shaped and hosted, the image its VMs boot, and
every chip's peak FLOP/s and memory. `flops` (MFU), `topology` (abstract devices to compile
for), `compile` (the memory check) and the TPU launcher (hosts and devices per host) read it.
A new generation is one more `TpuGeneration` in `TPUS`; a new board one more line in `GPUS`.
"""
import dataclasses
import math
import re

TERA = 1e12
GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: its dense peaks and its memory."""
  name: str
  bf16_flops: float  # dense peak FLOP/s, bfloat16 inputs
  fp32_flops: float  # dense peak FLOP/s of float32 matmuls at XLA's default precision
  hbm_bytes: int

  def peak_flops(self, dtype: str) -> float:
    return self.bf16_flops if dtype == "bfloat16" else self.fp32_flops


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
  """A TPU generation as gcloud, JAX and the Cloud TPU docs describe it."""
  name: str  # JAX's topology name: v5e in v5e:4x4
  gcloud_prefix: str  # gcloud's accelerator type: v5litepod in v5litepod-16
  device_kinds: tuple[str, ...]  # what jax.Device.device_kind reports
  cores_per_chip: int  # TensorCores per chip as the gcloud type counts them (JAX: a device a chip)
  chips_per_host: int
  single_host_max: int  # the largest slice that is one host, in chips
  torus_axes: int  # 2 (v5e, v6e) or 3 (v4, v5p)
  runtime_version: str  # the TPU VM image the launcher creates slices with
  chip: Chip
  chip_config_name: str | None = None  # libtpu's name for one device per chip, where not default


# Peaks: vendor data sheets. Float32 matmuls at the default precision run as bfloat16 passes on
# the MXU, so a TPU's float32 peak is its bfloat16 one.
TPUS = {t.name: t for t in (
    TpuGeneration("v4", "v4", ("TPU v4",), cores_per_chip=2, chips_per_host=4,
                  single_host_max=4, torus_axes=3, runtime_version="tpu-ubuntu2204-base",
                  chip=Chip("TPU v4", 275 * TERA, 275 * TERA, 32 * GIB),
                  chip_config_name="megacore"),
    TpuGeneration("v5e", "v5litepod", ("TPU v5 lite", "TPU v5e"), cores_per_chip=1,
                  chips_per_host=4, single_host_max=8, torus_axes=2,
                  runtime_version="v2-alpha-tpuv5-lite",
                  chip=Chip("TPU v5e", 197 * TERA, 197 * TERA, 16 * GIB)),
    TpuGeneration("v5p", "v5p", ("TPU v5", "TPU v5p"), cores_per_chip=2, chips_per_host=4,
                  single_host_max=4, torus_axes=3, runtime_version="v2-alpha-tpuv5",
                  chip=Chip("TPU v5p", 459 * TERA, 459 * TERA, 95 * GIB)),
    TpuGeneration("v6e", "v6e", ("TPU v6 lite", "TPU v6e"), cores_per_chip=1,
                  chips_per_host=4, single_host_max=8, torus_axes=2,
                  runtime_version="v2-alpha-tpuv6e",
                  chip=Chip("TPU v6e", 918 * TERA, 918 * TERA, 32 * GIB)),
)}

# GPU device kinds carry the board in their name ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"):
# the first pattern found names it. At the default precision XLA runs float32 matmuls on the TF32
# tensor cores, so the float32 peak is the (dense) TF32 one.
GPUS = (
    (r"H200", Chip("H200", 989 * TERA, 494.7 * TERA, 141 * 10 ** 9)),
    (r"H100.*PCIe", Chip("H100 PCIe", 756 * TERA, 378 * TERA, 80 * 10 ** 9)),
    (r"H100", Chip("H100 SXM", 989 * TERA, 494.7 * TERA, 80 * 10 ** 9)),
    (r"A100.*40GB", Chip("A100 40GB", 312 * TERA, 156 * TERA, 40 * 10 ** 9)),
    (r"A100", Chip("A100 80GB", 312 * TERA, 156 * TERA, 80 * 10 ** 9)),
)


def chip(device_kind: str) -> Chip | None:
  """The chip of a `jax.Device.device_kind`; None for an unknown kind (e.g. CPUs)."""
  for tpu in TPUS.values():
    if device_kind in tpu.device_kinds:
      return tpu.chip
  for pattern, spec in GPUS:
    if re.search(pattern, device_kind):
      return spec
  return None


class SliceError(ValueError):
  """A slice that cannot exist (the caller names the flag that asked for it)."""


@dataclasses.dataclass(frozen=True)
class Slice:
  """A TPU slice: its generation, its chips and (where standard or given) its torus shape."""
  tpu: TpuGeneration
  num_chips: int
  shape: tuple[int, ...] | None  # chips along each axis; None for a count of no standard shape

  @property
  def jax_name(self) -> str:
    assert self.shape is not None, f"{self.gcloud_name} has no standard shape"
    return f"{self.tpu.name}:{'x'.join(map(str, self.shape))}"

  @property
  def gcloud_name(self) -> str:
    return f"{self.tpu.gcloud_prefix}-{self.num_chips * self.tpu.cores_per_chip}"

  @property
  def hosts(self) -> int:
    if self.num_chips <= self.tpu.single_host_max:
      return 1
    return self.num_chips // self.tpu.chips_per_host

  @property
  def devices_per_host(self) -> int:
    """JAX devices (chips) on each host."""
    return self.num_chips // self.hosts


def standard_shape(tpu: TpuGeneration, chips: int) -> tuple[int, ...] | None:
  """The standard shape of a slice of `chips` chips (v5e-16 is 4x4, v5p-32 is 2x2x4, ...);
  None for a count that is no power of two."""
  if chips < 1 or chips & (chips - 1):
    return None
  if tpu.torus_axes == 2:
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


GCLOUD_TYPE = re.compile(rf"({'|'.join(t.gcloud_prefix for t in TPUS.values())})-(\d+)")
JAX_TOPOLOGY = re.compile(rf"({'|'.join(TPUS)}):(\d+(?:x\d+){{1,2}})")


def gcloud_slice(accelerator_type: str) -> Slice | None:
  """The slice of a gcloud accelerator type (v5litepod-16, v4-32); None for a name of another
  form; SliceError for a count no slice has."""
  match = GCLOUD_TYPE.fullmatch(accelerator_type)
  if not match:
    return None
  prefix, count = match.group(1), int(match.group(2))
  tpu = next(t for t in TPUS.values() if t.gcloud_prefix == prefix)
  if count % tpu.cores_per_chip:
    raise SliceError(f"{prefix} types count TensorCores, two per chip: use an even number "
                     f"({prefix}-8 is 4 chips)")
  chips = count // tpu.cores_per_chip
  if chips < 1:
    raise SliceError("a slice has one chip at the least")
  if chips > tpu.single_host_max and chips % tpu.chips_per_host:
    raise SliceError(f"{chips} chips is not a whole number of {tpu.chips_per_host}-chip hosts")
  return Slice(tpu, chips, standard_shape(tpu, chips))


def jax_slice(name: str) -> Slice | None:
  """The slice of a JAX topology name (v5e:4x4, v4:2x2x1); None for a name of another form;
  SliceError for a shape of the wrong rank."""
  match = JAX_TOPOLOGY.fullmatch(name)
  if not match:
    return None
  tpu = TPUS[match.group(1)]
  shape = tuple(int(d) for d in match.group(2).split("x"))
  if len(shape) != tpu.torus_axes:
    example = "x".join(map(str, standard_shape(tpu, 4)))
    raise SliceError(f"{tpu.name} slices have {tpu.torus_axes} axes, e.g. {tpu.name}:{example}")
  return Slice(tpu, math.prod(shape), shape)
