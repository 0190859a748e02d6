r"""Runs a multi-host command on this machine: N processes connected on 127.0.0.1.

  python launch/local.py --processes 2 -- --config configs/mae.py:demo --workdir workdirs/mae2

What it does, step by step: mimjax/launch/local.py.
"""
import os
import sys

# `python launch/local.py` runs this checkout's mimjax, whatever else is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mimjax.launch import local  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  local.main()
