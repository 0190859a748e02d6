"""Metric files that work on object stores: JSON lines in immutable chunks, mirrored TensorBoard.

On a local disk `metrics.jsonl` is appended to. An object (gs://) cannot be appended to: each
append rewrites it whole, so a long run's traffic would grow quadratically. There the lines go to
`metrics/<first step>-<last step>.jsonl`, one object per flush, never rewritten except when a
resumed run drops lines past its checkpoint. `read(workdir)` reads either layout, also while a
run writes it (a line being written is not a row yet).

TensorBoard event files are written by TensorFlow, whose Cloud Storage client cannot be pointed
elsewhere and rewrites on append: on a remote workdir they are written to a local folder, and on
each flush the writer is closed (the file is then final), uploaded to `workdir/tensorboard/` through
epath, and a new event file is started. TensorBoard reads a folder of event files as one run.
"""
import json
import os
import shutil
import tempfile

from etils import epath

from mimjax import storage
from mimjax import workdir_layout


def _chunk_name(first: int, last: int) -> str:
  return f"{first:09d}-{last:09d}.jsonl"


def _chunks(workdir) -> list[epath.Path]:
  directory = storage.path(workdir) / workdir_layout.METRICS_CHUNKS
  return sorted(directory.glob("*.jsonl")) if directory.exists() else []


def location(workdir) -> str:
  """Where a workdir's metric rows go: the file, or the folder of chunks."""
  return storage.join(workdir, workdir_layout.METRICS_CHUNKS if storage.is_remote(workdir)
                      else workdir_layout.METRICS)


def tensorboard_location(workdir) -> str:
  """Where a workdir's TensorBoard event files go."""
  return storage.join(workdir, workdir_layout.TENSORBOARD)


def _row(line: str) -> dict | None:
  """The row a line holds; None for a line cut short (being written, or by a kill)."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return None
  return row if isinstance(row, dict) and "step" in row else None


def read(workdir) -> list[dict]:
  """All metric rows of a workdir (either layout), in step order."""
  root = storage.path(workdir)
  texts = [p.read_text() for p in _chunks(workdir)]
  if (root / workdir_layout.METRICS).exists():
    texts.append((root / workdir_layout.METRICS).read_text())
  rows = [_row(line) for text in texts for line in text.splitlines() if line.strip()]
  return sorted((r for r in rows if r is not None), key=lambda r: r["step"])


def _keep_until(text: str, step: int) -> str:
  """The rows up to `step`; a line a kill cut short is dropped (the resumed run logs it again)."""
  rows = (_row(line) for line in text.splitlines() if line.strip())
  return "".join(json.dumps(row) + "\n" for row in rows if row is not None and row["step"] <= step)


class JsonLines:
  """Appends rows to `workdir/metrics.jsonl` (local) or writes them in chunks (remote)."""

  def __init__(self, workdir, start_step: int):
    self._root = storage.path(workdir)
    self._chunked = storage.is_remote(workdir)
    self._pending: list[dict] = []
    self._truncate_after(start_step)
    self._file = None if self._chunked else (self._root / workdir_layout.METRICS).open("a")

  def _truncate_after(self, step: int):
    """Drops rows past `step`: the interrupted run logged them after its last checkpoint."""
    if self._chunked:
      for chunk in _chunks(self._root):
        first, last = (int(s) for s in chunk.stem.split("-"))
        if first > step:
          chunk.unlink()
        elif last > step:
          kept = _keep_until(chunk.read_text(), step)
          chunk.unlink()
          if kept:
            (chunk.parent / _chunk_name(first, step)).write_text(kept)
    elif (self._root / workdir_layout.METRICS).exists():
      local = self._root / workdir_layout.METRICS
      local.write_text(_keep_until(local.read_text(), step))

  def write(self, row: dict):
    if self._chunked:
      self._pending.append(row)
    else:
      self._file.write(json.dumps(row) + "\n")
      self._file.flush()

  def flush(self):
    if self._chunked and self._pending:
      steps = [r["step"] for r in self._pending]
      chunk = self._root / workdir_layout.METRICS_CHUNKS / _chunk_name(min(steps), max(steps))
      chunk.parent.mkdir(parents=True, exist_ok=True)
      chunk.write_text("".join(json.dumps(r) + "\n" for r in self._pending))
      self._pending = []

  def close(self):
    self.flush()
    if self._file:
      self._file.close()


class TensorBoard:
  """A clu summary writer in `workdir/tensorboard`, written locally and mirrored when remote."""

  def __init__(self, workdir):
    self._target = storage.path(tensorboard_location(workdir))
    self._local = tempfile.mkdtemp(prefix="mimjax_tb_") if storage.is_remote(workdir) else None
    self._writer = self._open()

  def _open(self):
    from clu import metric_writers  # here: it imports TensorFlow, which `read` does not need
    return metric_writers.AsyncWriter(
        metric_writers.SummaryWriter(self._local or os.fspath(self._target)))

  def write_scalars(self, step: int, scalars: dict):
    self._writer.write_scalars(step, scalars)

  def write_images(self, step: int, images: dict):
    self._writer.write_images(step, images)

  def _mirror(self):
    """Uploads the closed event files and removes them locally."""
    for name in sorted(os.listdir(self._local)):
      storage.upload(os.path.join(self._local, name), self._target / name)
      os.remove(os.path.join(self._local, name))

  def flush(self):
    self._writer.flush()
    if self._local:
      self._writer.close()
      self._mirror()
      self._writer = self._open()

  def close(self):
    self._writer.flush()
    self._writer.close()
    if self._local:
      self._mirror()
      shutil.rmtree(self._local, ignore_errors=True)
