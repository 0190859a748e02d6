"""The sweep's results: a table on the console, ROOT/report.csv and ROOT/report.png.

Reads only the manifest and each trial's workdir, so it works while the sweep runs and on
gs:// roots. Every metrics.jsonl key other than the trainer's own is an evaluation metric and
gets a column (its last value) and a panel in the plot; so does each score's gain over the
trial's own step 0 (`knn/top1_gain`, logged by the trainer), next to the score.
"""
import csv
import dataclasses
import io
import math
from typing import Any

from etils import epath

from mimjax.sweeps import manifest as manifest_lib
from mimjax.sweeps import progress as progress_lib
from mimjax.sweeps import trials as trials_lib

# What the trainer logs every `log_every_steps`; anything else in metrics.jsonl is an eval metric.
TRAINING_KEYS = frozenset({"step", "loss", "lr", "grad_norm", "images_per_sec", "eta_seconds",
                           "corrupt_images_skipped", "mae_loss", "bc_loss", "ema_momentum",
                           "tflops_per_device", "mfu", "input_wait_fraction"})
CSV_NAME, PNG_NAME = "report.csv", "report.png"


@dataclasses.dataclass
class Row:
  name: str
  overrides: dict[str, Any]
  progress: progress_lib.Progress
  total_steps: int | None

  def curve(self, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in self.progress.rows if key in r]
    return [p[0] for p in points], [p[1] for p in points]

  @property
  def final_loss(self) -> float | None:
    losses = self.curve("loss")[1]
    return losses[-1] if losses else None

  @property
  def best_loss(self) -> float | None:
    losses = [v for v in self.curve("loss")[1] if math.isfinite(v)]
    return min(losses) if losses else None

  def final(self, key: str) -> float | None:
    values = self.curve(key)[1]
    return values[-1] if values else None


def collect(root: str) -> list[Row]:
  manifest = manifest_lib.read(root)
  if manifest is None:
    raise trials_lib.SweepError(f"--report: {manifest_lib.path(root)} does not exist: give the "
                                "--root of a sweep")
  return [Row(t["name"], t["overrides"], progress_lib.progress(root, t), t.get("total_steps"))
          for t in manifest["trials"]]


def swept_keys(rows: list[Row]) -> list[str]:
  return list(dict.fromkeys(k for r in rows for k in r.overrides))


def eval_keys(rows: list[Row]) -> list[str]:
  return sorted({k for r in rows for row in r.progress.rows for k in row} - TRAINING_KEYS)


def _fmt(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def table(rows: list[Row]) -> str:
  """The console table: trial, overrides, status, step, final and best loss, eval metrics."""
  evals = eval_keys(rows)
  header = ["trial", "overrides", "status", "step", "final_loss", "best_loss", *evals]
  body = [[r.name, trials_lib.describe(r.overrides), r.progress.status,
           f"{r.progress.step}/{r.total_steps or '?'}", _fmt(r.final_loss), _fmt(r.best_loss),
           *[_fmt(r.final(k)) for k in evals]] for r in rows]
  widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
  return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                   for line in [header, *body])


def csv_text(rows: list[Row]) -> str:
  """A row per trial: the swept keys and `final_loss` (and the rest) as columns."""
  keys, evals = swept_keys(rows), eval_keys(rows)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["trial", *keys, "status", "step", "total_steps", "final_loss", "best_loss",
                   *evals, "workdir"])
  for r in rows:
    writer.writerow([r.name, *[r.overrides.get(k, "") for k in keys], r.progress.status,
                     r.progress.step, r.total_steps or "", _csv(r.final_loss), _csv(r.best_loss),
                     *[_csv(r.final(k)) for k in evals], r.name])
  return out.getvalue()


def _csv(value):
  return "" if value is None else repr(value)


def _colours(rows: list[Row]):
  """A colour per trial from the first swept key that varies; (key, colours, colorbar mappable)."""
  import matplotlib
  from matplotlib import cm, colors

  for key in swept_keys(rows):
    values = [r.overrides.get(key) for r in rows]
    if len({repr(v) for v in values}) < 2:
      continue
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
      lo, hi = min(values), max(values)
      norm = (colors.LogNorm(lo, hi) if lo > 0 and hi / lo >= 10 else colors.Normalize(lo, hi))
      cmap = matplotlib.colormaps["viridis"]
      return key, [cmap(norm(v)) for v in values], cm.ScalarMappable(norm, cmap)
    distinct = list(dict.fromkeys(repr(v) for v in values))
    palette = matplotlib.colormaps["tab10"]
    return key, [palette(distinct.index(repr(v)) % 10) for v in values], None
  palette = matplotlib.colormaps["tab10"]
  return None, [palette(i % 10) for i in range(len(rows))], None


def _line_styles(rows: list[Row], colour_key: str | None) -> list[str]:
  """The other swept keys pick the line style, so trials of one colour stay apart."""
  rest = [k for k in swept_keys(rows) if k != colour_key]
  combos = [repr([r.overrides.get(k) for k in rest]) for r in rows]
  distinct = list(dict.fromkeys(combos))
  styles = ["-", "--", ":", "-."]
  return [styles[distinct.index(c) % len(styles)] for c in combos]


def png_bytes(rows: list[Row]) -> bytes:
  """Loss curves and eval metric curves per trial, coloured by the swept value."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  panels = ["loss", *eval_keys(rows)]
  colour_key, colours, mappable = _colours(rows)
  styles = _line_styles(rows, colour_key)
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False,
                           layout="constrained")
  for ax, key in zip(axes[0], panels):
    for row, colour, style in zip(rows, colours, styles):
      steps, values = row.curve(key)
      if steps:
        ax.plot(steps, values, style, color=colour, marker="." if len(steps) < 20 else None,
                label=f"{row.name} ({row.progress.status})")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(key if key != "loss" else "training loss")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  if mappable is not None:
    fig.colorbar(mappable, ax=axes[0].tolist(), label=colour_key)
  styled = [k for k in swept_keys(rows) if k != colour_key]
  fig.suptitle(f"{len(rows)} trials" + (f", colour: {colour_key}" if colour_key else "") +
               (f", line style: {', '.join(styled)}" if styled and len(set(styles)) > 1 else ""))
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  return buffer.getvalue()


def write(root: str) -> str:
  """Writes ROOT/report.csv and ROOT/report.png; returns the table."""
  rows = collect(root)
  (epath.Path(root) / CSV_NAME).write_text(csv_text(rows))
  (epath.Path(root) / PNG_NAME).write_bytes(png_bytes(rows))
  return table(rows)
