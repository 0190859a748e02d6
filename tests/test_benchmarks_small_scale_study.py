"""benchmarks/small_scale_study.py in its tiny form: it trains MAE and LUT, scores them and the
random init, and writes its table, numbers and figure (the full study's figures are in the README,
never asserted)."""
import json
import os
import subprocess
import sys

from tests import helpers


def test_the_study_writes_its_table_numbers_and_figure(tmp_path):
  out = tmp_path / "study"
  result = subprocess.run(
      [sys.executable, os.path.join(helpers.ROOT, "benchmarks", "small_scale_study.py"),
       "--out", str(out), "--tiny", "--steps", "2", "--seeds", "1",
       "--knobs", "bc_weight=0.25+ema_base=0.996"],
      env=helpers.cli_env(), capture_output=True, text=True, timeout=900, cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  study = json.loads((out / "study.json").read_text())
  runs = study["results"]
  assert sorted(runs) == ["LUT bc_weight=0.25+ema_base=0.996", "LUT seed 0", "MAE seed 0",
                         "random seed 0"]
  for numbers in runs.values():
    for key in ("knn_mean", "knn_cls", "probe_cls"):
      assert 0.0 <= numbers[key] <= 1.0, numbers
    assert 1.0 <= numbers["effective_rank"] <= 32  # the tiny ViT is 32 wide
    assert len(numbers["attention_distance"]) == 2  # one per layer
    assert all(0 < d < 32 * 2 ** 0.5 for d in numbers["attention_distance"])  # within the image
  table = (out / "study.md").read_text().splitlines()
  assert [row.split("|")[1].strip() for row in table[2:]] == [
      "random", "MAE", "LUT", "LUT bc_weight=0.25+ema_base=0.996"]
  mae_row = table[3].split("|")
  gain = runs["MAE seed 0"]["knn_mean"] - runs["random seed 0"]["knn_mean"]
  assert mae_row[3].strip() == f"{runs['MAE seed 0']['knn_mean']:.3f}, {gain:+.3f}"
  assert (out / "comparison.png").stat().st_size > 10_000
  assert table[0] in result.stdout
