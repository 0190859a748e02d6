"""The device mesh and the shardings of parameters, optimizer state and batches.

One code path for every scale: a ('data', 'fsdp') mesh; batches are split over both axes;
with fsdp > 1 every array whose size allows it is split along its largest divisible dimension
over 'fsdp' (the optimizer state follows its parameter, having the same shape).
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated: splitting them costs more communication than memory.
MIN_FSDP_SIZE = 2 ** 14


def make_mesh(data: int, fsdp: int, devices=None) -> Mesh:
  """A mesh of shape (data, fsdp); data=-1 takes every device fsdp leaves."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  if data == -1:
    data = devices.size // fsdp
  return Mesh(devices.reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _leaf_spec(shape, fsdp: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_FSDP_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state):
  """NamedShardings for every leaf of an (abstract) state pytree."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda leaf: NamedSharding(mesh, _leaf_spec(leaf.shape, fsdp)), abstract_state)
