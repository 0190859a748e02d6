"""Evaluators inside training, on 1 and 2 processes, and the mimjax-eval / mimjax-analyze CLIs."""
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mimjax import errors
from mimjax import evals
from mimjax import sharding
from mimjax import state as state_lib
from mimjax import train
from mimjax.evals import analysis_runner
from mimjax.evals import evaluate as evaluate_lib
from mimjax.models import masking
from mimjax.sweeps import manifest
from mimjax.sweeps import report
from tests import helpers

SPLITS = dict(train_split="train[:75%]", val_split="train[75%:]")

# configs/mae.py's demo with `_with_evals`' evaluators, as a config file of its own.
CONFIG_FILE = f'''
from configs import mae
from mimjax import evals
def get_config(arg=None):
  c = mae.get_config(arg)
  with c.unlocked():
    c.evals.knn = evals.make_config("knn", **{SPLITS})
    c.evals.reconstruction = evals.make_config("reconstruction", split="train[75%:]", every_steps=0)
  return c
'''


def _with_evals(config, every_steps=2):
  with config.unlocked():
    # kNN on the [CLS] token (mimjax-eval's default feature) of the photos' last quarter (40).
    config.evals.knn = evals.make_config("knn", every_steps=every_steps, **SPLITS)
    config.evals.reconstruction = evals.make_config("reconstruction", split="train[75%:]",
                                                    every_steps=every_steps)
  return config


def _eval_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["step"]: r for r in rows if "knn/top1" in r}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny MAE trained 40 steps with kNN and reconstruction evaluators every 20 steps."""
  workdir = str(tmp_path_factory.mktemp("evals") / "mae")
  config = _with_evals(helpers.tiny_config("mae", total_steps=40, ckpt_every_steps=40,
                                           log_every_steps=20), every_steps=20)
  state = train.train(config, workdir)
  return config, workdir, state


def test_training_logs_evaluator_results_and_their_cost(trained):
  _, workdir, _ = trained
  rows = _eval_rows(workdir)
  assert sorted(rows) == [0, 20, 40]  # step 0: before the first update
  for r in rows.values():
    assert 0 <= r["knn/top1"] <= r["knn/top5"] <= 1
    assert r["knn/top1"] * 40 == pytest.approx(round(r["knn/top1"] * 40))  # 40 held-out photos
    assert r["knn/seconds"] > 0 and r["reconstruction/seconds"] > 0
    assert math.isfinite(r["reconstruction/loss"])
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_each_later_score_carries_its_gain_over_step_0(trained):
  _, workdir, _ = trained
  rows = _eval_rows(workdir)
  scores = ["knn/top1", "knn/top5", "reconstruction/loss"]
  assert not any(k.endswith("_gain") for k in rows[0])
  for step in (20, 40):
    gains = {k for k in rows[step] if k.endswith("_gain")}
    assert gains == {f"{k}_gain" for k in scores}  # the cost (NAME/seconds) has none
    for k in scores:
      assert rows[step][f"{k}_gain"] == rows[step][k] - rows[0][k]
  # 40 steps of MAE lower the held-out reconstruction loss of the run's own random init.
  assert rows[40]["reconstruction/loss_gain"] < 0


class _StepScore:
  """A stand-in evaluator whose score is the step it ran at."""

  def __init__(self, config, eval_config, model, mesh):
    pass

  def run(self, params, step=None):
    return {"score": float(step), "loss": 1.0}


def test_at_start_is_per_evaluator_and_gains_are_against_step_0(monkeypatch):
  config = helpers.tiny_config("mae")
  with config.unlocked():
    config.evals.a = evals.make_config("knn", every_steps=2)
    config.evals.b = evals.make_config("knn", every_steps=2, at_start=False)
  monkeypatch.setattr(evals, "get", lambda type: _StepScore)
  evaluators = evals.Evaluators(config, None, None)
  start = evaluators.run_at_start(None)
  assert sorted(start) == ["a/loss", "a/score", "a/seconds"] and start["a/score"] == 0
  later = evaluators.maybe_run(None, 2, 4)
  assert sorted(later) == ["a/loss", "a/loss_gain", "a/score", "a/score_gain", "a/seconds",
                           "b/loss", "b/score", "b/seconds"]
  assert (later["a/score_gain"], later["a/loss_gain"]) == (2.0, 0.0)
  # A resumed run: the reference is its metrics' step-0 row.
  evaluators = evals.Evaluators(config, None, None)
  evaluators.remember_start([{"step": 0, "a/score": -1.0}, {"step": 2, "a/score": 2.0}])
  end = evaluators.maybe_run(None, 4, 4)
  assert end["a/score_gain"] == 5.0 and "a/loss_gain" not in end and "b/score_gain" not in end


def test_sweep_report_shows_the_gains_the_run_logged(trained, tmp_path):
  _, workdir, _ = trained
  root = tmp_path / "root"
  (root / "mae").mkdir(parents=True)
  shutil.copy(os.path.join(workdir, "metrics.jsonl"), root / "mae")
  manifest.write(str(root), {"version": manifest.VERSION, "trials": [
      {"name": "mae", "overrides": {}, "workdir": "mae", "total_steps": 40}]})
  rows = report.collect(str(root))
  assert "knn/top1_gain" in report.table(rows).splitlines()[0]
  written = next(csv.DictReader(io.StringIO(report.csv_text(rows))))
  logged = _eval_rows(workdir)
  for k in ("knn/top1", "knn/top5", "reconstruction/loss"):
    assert float(written[f"{k}_gain"]) == logged[40][k] - logged[0][k]
  assert "knn/seconds_gain" not in written


def test_briefly_pretrained_encoder_beats_a_random_one_on_held_out_reconstruction(trained):
  config, workdir, state = trained
  model, mesh = state_lib.build_model(config), sharding.make_mesh(-1, 1)
  random_params = jax.jit(model.init)(jax.random.key(1), jnp.zeros((2, 16, 16, 3)),
                                      masking.sample_noise(jax.random.key(0), 2, 16))["params"]
  evaluator = evals.get("reconstruction")(config, config.evals.reconstruction, model, mesh)
  pretrained, random = evaluator.run(state["params"]), evaluator.run(random_params)
  assert pretrained["loss"] == pytest.approx(_eval_rows(workdir)[40]["reconstruction/loss"],
                                             rel=1e-5)
  assert pretrained["loss"] < 0.9 * random["loss"], (pretrained, random)


def test_linear_probe_on_a_workdir(trained):
  _, workdir, _ = trained
  result = evaluate_lib.evaluate(workdir, "linear_probe", dataset="offline_photos", batch_size=16,
                             epochs=20, base_lr=200.0, **SPLITS)
  assert 1 / 20 <= result["top1"] <= result["top5"] <= 1 and result["eval"] == "linear_probe"


def _cli(args, timeout=300):
  return subprocess.run([sys.executable, *args], env=helpers.cli_env(), capture_output=True,
                        text=True, timeout=timeout, cwd=helpers.ROOT)


def test_eval_cli_writes_the_knn_accuracy_the_trainer_logged(trained, tmp_path):
  _, workdir, _ = trained
  out = tmp_path / "knn.json"
  result = _cli(["-m", "mimjax.evals.cli", "--model", workdir, "--eval", "knn",
                 "--train_split", SPLITS["train_split"], "--val_split", SPLITS["val_split"],
                 "--batch_size", "8", "--out", str(out)])
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads(out.read_text())
  logged = _eval_rows(workdir)[40]
  assert written["top1"] == pytest.approx(logged["knn/top1"])
  assert written["top5"] == pytest.approx(logged["knn/top5"])
  bad = _cli(["-m", "mimjax.evals.cli", "--model", workdir, "--eval", "knn", "--val_split",
              "nosuch"])
  assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
  assert bad.stderr.strip().splitlines()[-1].startswith("mimjax-eval: error: --val_split: 'nosuch'")


def test_analyze_cli_compares_models_and_shows_registers(trained, tmp_path):
  _, workdir, _ = trained
  registers = str(tmp_path / "registers")
  train.train(helpers.tiny_config("mae", total_steps=2, **{"model.num_registers": 2}), registers)
  out = tmp_path / "analysis"
  result = _cli(["-m", "mimjax.evals.analysis_cli", "--model", workdir, "--model", registers,
                 "--name", "plain", "--name", "reg", "--out", str(out), "--num_images", "24",
                 "--heads", "2:0,1:1"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert {"analysis.json", "comparison.png", "entropy.png", "token_norms.png",
          "attention_plain.png", "attention_reg.png"} <= set(os.listdir(out))
  numbers = json.loads((out / "analysis.json").read_text())
  for name, r in numbers.items():
    assert len(r["attention_distance"]) == 2 and len(r["attention_distance"][0]) == 2
    # Between attending to itself (0 px) and the farthest patch of a 4x4 grid of 4 px patches.
    assert all(0 < d < 4 * 3 * math.sqrt(2) for layer in r["attention_distance"] for d in layer)
    assert 1 <= r["effective_rank"] <= 32 and r["num_images"] == 24
  assert "registers" in numbers["reg"]["token_norms"][0]
  assert "registers" not in numbers["plain"]["token_norms"][0]


def test_analyze_with_no_map_images_draws_no_attention_maps(trained, tmp_path):
  _, workdir, _ = trained
  out = tmp_path / "analysis"
  numbers = analysis_runner.analyze([workdir], ["plain"], str(out), num_images=8, batch_size=8,
                            num_map_images=0)
  written = set(os.listdir(out))
  assert {"analysis.json", "comparison.png"} <= written
  assert not any(name.startswith("attention_") for name in written)
  assert numbers["plain"]["num_images"] == 8


def test_analyze_heads_flag():
  assert analysis_runner.parse_heads([], 2, 3) == [(2, 0), (2, 1), (2, 2)]
  assert analysis_runner.parse_heads(["1:2", "2:0"], 2, 3) == [(1, 2), (2, 0)]
  for bad in ("9:0", "1:3", "x"):
    with pytest.raises(errors.UserError, match=f"--heads: '{bad}'"):
      analysis_runner.parse_heads([bad], 2, 3)


def test_two_processes_report_the_same_evaluator_numbers_as_one(tmp_path):
  config_file = tmp_path / "config.py"
  config_file.write_text(CONFIG_FILE)
  overrides = {"evals.knn.every_steps": 0}  # at the end only
  single = str(tmp_path / "single")
  train.train(_with_evals(helpers.tiny_config("mae"), every_steps=0), single)
  multi = str(tmp_path / "multi")
  flags = helpers.cli_flags("mae", multi, **overrides)
  flags[0] = f"--config={config_file}:demo"
  procs = helpers.start_two_processes(flags)
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  one, two = _eval_rows(single), _eval_rows(multi)
  assert sorted(one) == sorted(two) == [0, 4]
  for step in one:
    assert two[step]["knn/top1"] == one[step]["knn/top1"]
    assert two[step]["knn/top5"] == one[step]["knn/top5"]
    assert two[step]["reconstruction/loss"] == pytest.approx(one[step]["reconstruction/loss"],
                                                             rel=1e-4)
  assert two[4]["knn/top1_gain"] == one[4]["knn/top1_gain"]
