"""Launch targets: where a run's processes start (this machine, a SLURM cluster, a TPU slice).

A target is one module here defining a `common.LaunchTarget` (a dataclass whose option fields
are its flags), run as `python launch/KIND.py [target flags] -- [mimjax-train flags]` (launch/
holds the thin scripts) through `common.launch`: checks first, before anything is booked
(`--dry_run` prints the commands), then `run` of one job. `targets.TARGETS` lists them by
name; mimjax-sweep runs a sweep's trials through the same objects (`--target=KIND`, the
options as `--{sweep_prefix}FIELD`). What targets share (config and workdir checks, shipping
the checkout, running and stopping workers) lives in `common`.
"""
