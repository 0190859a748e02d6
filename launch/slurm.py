r"""Submits mimjax-train to a SLURM GPU cluster: one task per GPU, connected by JAX's SLURM support.

  python launch/slurm.py --nodes 2 --gpus_per_node 8 --partition gpu --time 24:00:00 \
      -- --config configs/mae.py:variant=L/16,dataset=imagenet2012 --workdir /shared/runs/mae-l16

What it does, step by step: mimjax/launch/slurm.py.
"""
import os
import sys

# `python launch/slurm.py` runs this checkout's mimjax, whatever else is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mimjax.launch import slurm  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  slurm.main()
