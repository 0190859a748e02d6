"""metric_files: a resumed run's metrics file keeps the rows up to its checkpoint, also when a kill
cut the last line short."""
import json

from mimjax import metric_files
from mimjax import workdir_layout


def test_a_resumed_run_drops_later_rows_and_a_line_cut_short_by_a_kill(tmp_path):
  rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
  text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo'  # killed mid-line
  (tmp_path / workdir_layout.METRICS).write_text(text)
  writer = metric_files.JsonLines(str(tmp_path), start_step=3)
  writer.write({"step": 4, "loss": 0.5})
  writer.close()
  assert metric_files.read(str(tmp_path)) == rows[:3] + [{"step": 4, "loss": 0.5}]
  assert (tmp_path / workdir_layout.METRICS).read_text().count("\n") == 4  # no fragment left
