"""Evaluators run during training (on a schedule) or after it (mimjax-eval, mimjax-analyze).

`config.evals` maps a name to an evaluator config (`make_config(type, ...)`, big_vision style):

    c.evals.knn = evals.make_config("knn", every_steps=1000, val_split="validation")

  registry.py         register / get by type name; the evaluator interface
  features.py         frozen features of a split, sharded over the mesh
  classification.py   "classification": a fine-tuned classifier's top-1 / top-5 / loss
  knn.py              "knn": weighted kNN accuracy (DINO's protocol)
  reconstruction.py   "reconstruction": held-out MAE loss under fixed masks
  linear_probe.py     "linear_probe": MAE's linear probe on features extracted once
  analysis_measures.py  mimjax-analyze's measures: attention distance and entropy, spectra, norms
  analysis_runner.py  mimjax-analyze's runner: models and images in, numbers and figures out
  analysis_cli.py     mimjax-analyze's command line; plots.py its figures
  cli.py              mimjax-eval: kNN or linear probe of a workdir or an export

The trainer calls `Evaluators(config, model, mesh)` once, `run_at_start(...)` before the first
update (or `remember_start(...)` on resuming) and `maybe_run(...)` after each step.
"""
import time

from mimjax.evals import classification  # noqa: F401  (registers "classification")
from mimjax.evals import knn  # noqa: F401  (registers "knn")
from mimjax.evals import linear_probe  # noqa: F401  (registers "linear_probe")
from mimjax.evals import reconstruction  # noqa: F401  (registers "reconstruction")
from mimjax.evals.registry import get, make_config, names, register
from mimjax.metrics import GAIN_SUFFIX

__all__ = ["Evaluators", "GAIN_SUFFIX", "get", "make_config", "names", "register", "validate"]


def _entries(config):
  return sorted(config.get("evals", {}).items())


def validate(config, num_processes: int, num_devices: int):
  """Raises ValueError naming the `config.evals.NAME.KEY` that cannot work."""
  for name, e in _entries(config):
    if e.get("type") not in names():
      raise ValueError(f"config.evals.{name}.type: {e.get('type')!r} is not one of {names()}")
    if not isinstance(e.every_steps, int) or e.every_steps < -1:
      raise ValueError(f"config.evals.{name}.every_steps: {e.every_steps!r}: use N > 0 (every N "
                       "steps and at the end), 0 (only at the end) or -1 (never)")
    for key in ("batch_size", "image_size"):
      if not isinstance(e[key], int) or e[key] < 0:
        raise ValueError(f"config.evals.{name}.{key}: {e[key]!r} must be >= 0 (0: config.input's)")
    batch = e.batch_size or config.input.batch_size
    if batch % num_devices or batch % num_processes:
      raise ValueError(f"config.evals.{name}.batch_size: {batch} is not divisible by the "
                       f"{num_devices} devices and {num_processes} processes")
    cls = get(e.type)
    if hasattr(cls, "validate"):
      cls.validate(config, e, name, num_processes, num_devices)


class Evaluators:
  """The evaluators of `config.evals`, built once; `maybe_run` runs those due at a step.

  `at_start` holds the step-0 results ('NAME/SCALAR' -> value), the reference of every later
  score's gain: measured by `run_at_start`, or read back by `remember_start` on a resumed run.
  """

  def __init__(self, config, model, mesh):
    self.entries = [(name, e, get(e.type)(config, e, model, mesh))
                    for name, e in _entries(config) if e.every_steps != -1]
    self.at_start: dict[str, float] = {}

  def due(self, step: int, total_steps: int) -> list:
    return [(name, evaluator) for name, e, evaluator in self.entries
            if step == total_steps or (e.every_steps > 0 and step % e.every_steps == 0)]

  def run_at_start(self, params) -> dict[str, float]:
    """The results at step 0 of the evaluators with `at_start`, kept as the gains' reference."""
    out = self._run([(name, evaluator) for name, e, evaluator in self.entries if e.at_start],
                    params, 0)
    self.at_start = out
    return out

  def remember_start(self, rows: list[dict]):
    """A resumed run's reference: the step-0 row of its metrics (a workdir from before step-0
    evaluation has none, and its results carry no gain)."""
    self.at_start = {k: v for row in rows if row["step"] == 0 for k, v in row.items()
                     if k != "step"}

  def maybe_run(self, params, step: int, total_steps: int) -> dict[str, float]:
    """{'NAME/SCALAR': value, 'NAME/SCALAR_gain': value - step 0's, 'NAME/seconds': cost} of
    the evaluators due at `step` (or {})."""
    return self._run(self.due(step, total_steps), params, step)

  def _run(self, due, params, step: int) -> dict[str, float]:
    out = {}
    for name, evaluator in due:
      start = time.perf_counter()
      scalars = {f"{name}/{k}": float(v) for k, v in evaluator.run(params, step).items()}
      out.update(scalars)
      out[f"{name}/seconds"] = time.perf_counter() - start
      if step:  # the evaluator's own scores have a gain, its cost has none
        out.update({key + GAIN_SUFFIX: value - self.at_start[key]
                    for key, value in scalars.items() if key in self.at_start})
    return out
