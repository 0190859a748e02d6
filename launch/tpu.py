r"""Runs mimjax-train on a Cloud TPU VM slice (a pod: every host runs one process).

  python launch/tpu.py --name mae-l16 --zone us-central1-a --accelerator_type v5litepod-16 \
      -- --config configs/mae.py:variant=L/16,dataset=imagenet2012 --workdir gs://BUCKET/mae-l16

What it does, step by step: mimjax/launch/tpu.py.
"""
import os
import sys

# `python launch/tpu.py` runs this checkout's mimjax, whatever else is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mimjax.launch import tpu  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  tpu.main()
