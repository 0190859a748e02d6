r"""Runs a config sweep (see mimjax/sweeps/cli.py): the same command as mimjax-sweep.

  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root workdirs/mae_sweep
  python launch/sweep.py --config configs/mae.py:demo --sweep configs/sweeps/mae_demo.py \
      --root gs://BUCKET/mae_sweep --target tpu --name mae-sweep --zone us-central1-a \
      --accelerator_type v5litepod-8
  python launch/sweep.py --report workdirs/mae_sweep
"""
import os
import sys

# `python launch/sweep.py` runs this checkout's mimjax, whatever else is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mimjax.sweeps import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  cli.main()
