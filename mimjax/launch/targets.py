"""The launch targets by name: what `mimjax-sweep --target=NAME` chooses from.

A new target is a module here defining a `common.LaunchTarget` subclass (its options, how many
processes and devices a run gets, how it runs a list of jobs), a thin launch/KIND.py script,
and one entry below.
"""
from mimjax.launch import common
from mimjax.launch import local
from mimjax.launch import slurm
from mimjax.launch import tpu

TARGETS: dict[str, type[common.LaunchTarget]] = {
    t.kind: t for t in (local.LocalTarget, slurm.SlurmTarget, tpu.TpuTarget)}
