"""The recipes: `get_config(arg)` per file (mae.py, lut.py, finetune.py), what they share in
common.py, and sweep files under sweeps/. The command line names a file
(`mimjax-train --config configs/mae.py:demo`); a config file imports what it builds on
(`from configs import common`), which resolves from any working directory because setup.py
installs this package beside mimjax.
"""
