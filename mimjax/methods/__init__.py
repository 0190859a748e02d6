"""Training methods: one module per objective, behind the small interface of `base.Method`.

  base.py      the interface the trainer calls (model, extra state, micro-batch loss, hooks)
  mae.py       MAE: masked reconstruction
  lut.py       LUT: MAE plus the broader-context loss through an EMA teacher
  finetune.py  supervised fine-tuning of a pre-trained encoder (global pool, fc_norm, head)

A new method is a new module with a `Method` subclass registered under its `config.method` name;
the trainer, the state and the config schema never branch on the name.
"""
from mimjax.methods.base import Method, get, names, register

# Importing registers them.
from mimjax.methods import mae  # pylint: disable=g-import-not-at-top,wrong-import-position
from mimjax.methods import lut  # pylint: disable=g-import-not-at-top,wrong-import-position
from mimjax.methods import finetune  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ["Method", "get", "names", "register"]
