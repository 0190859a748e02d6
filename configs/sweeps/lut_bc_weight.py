r"""LUT's BC-loss weight, with the EMA momentum moving along (a zip, not a product): 3 trials.

  python launch/sweep.py --config configs/lut.py:demo --sweep configs/sweeps/lut_bc_weight.py \
      --root workdirs/lut_bc_sweep
"""
from mimjax import sweeps


def get_sweep(arg=None):
  del arg
  return sweeps.zip(
      sweeps.sweep("lut.bc_weight", [0.1, 0.25, 0.5]),
      sweeps.sweep("lut.ema_base", [0.99, 0.996, 0.999]))
