"""The device mesh and the shardings of parameters, optimizer state and batches.

One code path for every scale: a ('data', 'fsdp') mesh; batches are split over both axes;
with fsdp > 1 every array whose size allows it is split along its largest divisible dimension
over 'fsdp' (the optimizer state follows its parameter, having the same shape).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int, fsdp: int, devices=None) -> Mesh:
  """A mesh of shape (data, fsdp); data=-1 takes every device fsdp leaves."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  if data == -1:
    data = devices.size // fsdp
  return Mesh(devices.reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh, batch_axes=BATCH_AXES) -> NamedSharding:
  """The leading (batch) axis split over `batch_axes`."""
  missing = [a for a in batch_axes if a not in mesh.axis_names]
  if missing:
    raise ValueError(f"batch axes {missing} are not axes of the mesh {mesh.axis_names}")
  return NamedSharding(mesh, P(tuple(batch_axes)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape, fsdp: int, min_size: int) -> P:
  """Splits the largest dimension divisible by `fsdp`; arrays under `min_size` stay replicated
  (splitting them costs more communication than it saves memory)."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state, min_size: int):
  """NamedShardings for every leaf of an (abstract) state pytree."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda leaf: NamedSharding(mesh, fsdp_spec(leaf.shape, fsdp, min_size)), abstract_state)
