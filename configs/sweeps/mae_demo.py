r"""The MAE demo's mask ratio against two learning rates: 6 trials.

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root workdirs/mae_demo_sweep
  python launch/sweep.py --report workdirs/mae_demo_sweep

`:short` gives the 2 x 2 corner of the grid (mask ratio 0.6 and 0.9).
"""
from mimjax import sweeps


def get_sweep(arg=None):
  ratios = [0.6, 0.9] if arg == "short" else [0.6, 0.75, 0.9]
  return sweeps.product(
      sweeps.sweep("model.mask_ratio", ratios),
      sweeps.sweep("optim.base_lr", [5e-3, 1e-2]))  # the demo's 1e-2 and half of it
