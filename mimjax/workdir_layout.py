"""What a training workdir holds, by name: the one place each entry is spelt.

  WORKDIR/
    checkpoints/<step>/           CHECKPOINTS: orbax's, one folder per kept step (checkpoint.py)
    checkpoints_damaged/<step>/   DAMAGED_CHECKPOINTS: checkpoints that failed to restore, moved
                                  aside, never deleted (checkpoint.py)
    metrics.jsonl                 METRICS: one JSON row per logged step, on a local disk
    metrics/<first>-<last>.jsonl  METRICS_CHUNKS: the same rows in immutable pieces, on an object
                                  store (metric_files.py reads and writes both)
    tensorboard/                  TENSORBOARD: event files (metric_files.py)
    profile/                      PROFILE: a jax.profiler trace (profiling.py)
    run.lock                      LOCK: the live run's lock (workdir_lock.py)
    save_errors/<step>.log        SAVE_ERRORS: why the save of a step failed, with the storage's
                                  tracebacks (checkpoint.py)
    launch/                       LAUNCH: what a launcher shipped: its git sha, the uncommitted diff,
                                  the code archive (launch/common.py)

It imports nothing, so that any room, light or heavy, may read it.
"""
CHECKPOINTS = "checkpoints"
DAMAGED_CHECKPOINTS = "checkpoints_damaged"
METRICS = "metrics.jsonl"
METRICS_CHUNKS = "metrics"
TENSORBOARD = "tensorboard"
PROFILE = "profile"
LOCK = "run.lock"
SAVE_ERRORS = "save_errors"
LAUNCH = "launch"
