"""Launch targets: where a run's processes start (this machine, a SLURM cluster, a TPU slice).

A target is one module here, run as `python launch/TARGET.py [target flags] -- [mimjax-train
flags]` (launch/ holds the thin scripts). It builds its flags with `common.ArgumentParser`,
defines `launch(argv) -> exit code` (checks first, before anything is booked; `--dry_run` prints
the commands), and `main()` runs it through `common.main`, which turns a `common.LaunchError`
into one line. What targets share (config and workdir checks, shipping the checkout, running
and stopping workers) lives in `common`. Sweeps (mimjax.sweeps) build on these modules.
"""
