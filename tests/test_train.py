"""The trainer end to end: runs, resumes exactly, survives kills, stops on bad losses."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mimjax import checkpoint
from mimjax import metrics as metrics_lib
from mimjax import optim
from mimjax import train
from tests import helpers


@pytest.mark.parametrize("method", ["mae", "lut"])
def test_end_to_end_run_writes_metrics_and_checkpoints(method, tmp_path):
  workdir = str(tmp_path / method)
  c = helpers.tiny_config(method, image_every_steps=2)
  train.train(c, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  keys = {"step", "loss", "lr", "grad_norm", "images_per_sec", "input_wait_fraction"}
  if method == "lut":
    keys |= {"mae_loss", "bc_loss", "ema_momentum"}
  for r in rows:
    assert keys <= set(r) and all(math.isfinite(r[k]) for k in keys)
  peak = optim.peak_learning_rate(c.optim.base_lr, c.input.batch_size, c.optim.lr_rule)
  assert rows[0]["lr"] == pytest.approx(peak)  # 4 steps leave no room for warm-up: cosine from peak
  assert rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"] > rows[3]["lr"] > 0
  if method == "lut":
    for r in rows:
      assert r["loss"] == pytest.approx(r["mae_loss"] + c.lut.bc_weight * r["bc_loss"], rel=1e-5)
    assert rows[0]["ema_momentum"] == pytest.approx(c.lut.ema_base)
    assert rows[0]["ema_momentum"] < rows[-1]["ema_momentum"] < 1
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_bfloat16_compute_with_remat_trains_lut(tmp_path):
  train.train(helpers.tiny_config("lut", total_steps=2), str(tmp_path / "f32"))
  bf16 = train.train(helpers.tiny_config("lut", total_steps=2, **{"model.dtype": "bfloat16",
                                                            "model.remat": True}),
                     str(tmp_path / "bf16"))
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(bf16["params"]))
  losses32, losses16 = helpers.losses(str(tmp_path / "f32")), helpers.losses(str(tmp_path / "bf16"))
  for step in (1, 2):
    assert losses16[step] == pytest.approx(losses32[step], rel=0.05)
  assert losses16 != losses32  # the compute dtype did change


class _PacedBatches:
  """The run's real batches, read ahead, then served at once or, on the `slow` fetches, late."""

  def __init__(self, batches, steps: int, slow: range, delay: float = 0.5):
    self._batches = [next(batches) for _ in range(steps)]  # the pipeline's own pace is not tested
    self.num_corrupt = batches.num_corrupt
    self._slow, self._delay, self._served = slow, delay, 0

  def __next__(self):
    self._served += 1
    if self._served in self._slow:
      time.sleep(self._delay)
    return self._batches[self._served - 1]


def test_input_wait_is_near_zero_with_fast_input_and_near_one_with_slow(tmp_path, monkeypatch,
                                                                         capsys):
  real = train.data.make_train_iterator
  monkeypatch.setattr(train.data, "make_train_iterator",
                      lambda *args, **kwargs: _PacedBatches(real(*args, **kwargs), 9, range(7, 10)))
  train.train(helpers.tiny_config("mae", total_steps=9, log_every_steps=3, ckpt_every_steps=9),
              str(tmp_path))
  rows = {r["step"]: r for r in map(json.loads, open(tmp_path / "metrics.jsonl"))}
  assert sorted(rows) == [3, 6, 9]
  assert rows[6]["input_wait_fraction"] < 0.2  # batches at hand: the devices never wait
  assert rows[9]["input_wait_fraction"] > 0.5  # 0.5 s per batch against a step of milliseconds
  out = capsys.readouterr().out
  before, after = out.split("step 9/9")
  assert "input-bound" not in before and "input wait" not in before
  assert after.startswith(" | ") and "| input wait " in after.splitlines()[0]
  warnings = [line for line in after.splitlines() if "input-bound" in line]
  assert len(warnings) == 1 and "input.fast_resize=True" in warnings[0], out
  assert "input.shuffle_buffer" in warnings[0] and "input.num_threads" in warnings[0]


def test_profile_writes_a_trace_of_the_chosen_steps(tmp_path, capsys):
  workdir = str(tmp_path)
  train.train(helpers.tiny_config("mae", **{"profile.start_step": 2, "profile.num_steps": 2}),
              workdir)
  traces = list((tmp_path / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1, list(tmp_path.rglob("*"))
  assert helpers.traced_steps(traces[0]) == {2, 3}
  assert f"Profile of steps 2-3: {workdir}/profile" in capsys.readouterr().out


def test_resume_in_a_workdir_continues_exactly(tmp_path):
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  train.train(helpers.tiny_config("lut", total_steps=4), full)
  train.train(helpers.tiny_config("lut", total_steps=4, ckpt_every_steps=2), split)
  # Throw away the last checkpoint and the metrics past step 2, as a kill would have.
  import shutil
  shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(split), "4"))
  resumed = train.train(helpers.tiny_config("lut", total_steps=4), split)
  assert helpers.losses(full) == helpers.losses(split)
  reference = checkpoint.Checkpointer(full, read_only=True)
  assert int(resumed["step"]) == 4 and reference.latest_step() == 4


def _rows(workdir) -> list[dict]:
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _rewrite_rows(workdir, rows):
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


def test_evaluators_run_at_step_0_once_and_a_resumed_run_keeps_it_as_the_reference(tmp_path,
                                                                                     capsys):
  workdir = str(tmp_path)
  knn_at_the_end = lambda: helpers.tiny_config("mae", **{"evals.knn.every_steps": 0})
  train.train(knn_at_the_end(), workdir)
  evals_rows = lambda: {r["step"]: r for r in _rows(workdir) if "knn/top1" in r}
  first = evals_rows()
  assert sorted(first) == [0, 4]
  start, end = first[0], first[4]
  assert set(start) == {"step", "knn/top1", "knn/top5", "knn/seconds"}
  for k in ("knn/top1", "knn/top5"):
    assert end[f"{k}_gain"] == end[k] - start[k]
  assert "knn/seconds_gain" not in end
  out = capsys.readouterr().out
  assert f"step 0/4 | knn/top1 {start['knn/top1']:.4g} | knn/top5" in out
  assert (f"step 4/4 | knn/top1 {end['knn/top1']:.4g} (step 0: {start['knn/top1']:.4g}, "
          f"{end['knn/top1_gain']:+.4g}) | knn/top5") in out

  # Resumed at step 2 (as after a kill): no second step-0 evaluation; the gains are against the
  # step-0 row in the workdir (changed here, so that reading it back shows).
  checkpoints = checkpoint.checkpoint_dir(workdir)
  shutil.rmtree(os.path.join(checkpoints, "4"))
  _rewrite_rows(workdir, [dict(r, **{"knn/top1": 0.0125}) if r["step"] == 0 and "knn/top1" in r
                          else r for r in _rows(workdir)])
  train.train(knn_at_the_end(), workdir)
  resumed = evals_rows()
  assert sorted(resumed) == [0, 4] and resumed[0]["knn/top1"] == 0.0125
  assert resumed[4]["knn/top1"] == end["knn/top1"]  # the same run: the same score
  assert resumed[4]["knn/top1_gain"] == end["knn/top1"] - 0.0125
  assert resumed[4]["knn/top5_gain"] == end["knn/top5_gain"]

  # A workdir from before step-0 evaluation has no reference: no gain, no second step 0.
  shutil.rmtree(os.path.join(checkpoints, "4"))
  _rewrite_rows(workdir, [r for r in _rows(workdir) if r["step"] != 0])
  train.train(knn_at_the_end(), workdir)
  assert sorted(evals_rows()) == [4]
  assert not any(k.endswith("_gain") for k in evals_rows()[4])


def test_a_run_from_step_0_keeps_no_row_of_an_attempt_without_checkpoints(tmp_path):
  workdir = str(tmp_path)
  _rewrite_rows(workdir, [{"step": 0, "knn/top1": 0.5}, {"step": 1, "loss": 2.0}])
  metrics_lib.MetricsLogger(workdir, 4, start_step=0).close()
  assert _rows(workdir) == []  # the attempt's step 0 included: this run logs its own
  _rewrite_rows(workdir, [{"step": 0, "knn/top1": 0.5}, {"step": 2, "loss": 2.0},
                          {"step": 3, "loss": 1.0}])
  metrics_lib.MetricsLogger(workdir, 4, start_step=2).close()  # resumed at a checkpoint
  assert [r["step"] for r in _rows(workdir)] == [0, 2]


def test_mae_demo_loss_falls(tmp_path):
  c = helpers.load_config("mae", "demo")
  c.update_from_flattened_dict({"total_steps": 40, "log_every_steps": 1, "ckpt_every_steps": 40,
                                "image_every_steps": 0})
  train.train(c, str(tmp_path))
  losses = helpers.losses(str(tmp_path))
  first, last = np.mean([losses[s] for s in range(1, 6)]), np.mean([losses[s] for s in range(36, 41)])
  assert last < 0.85 * first, (first, last)


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  runs = {}
  for devices, fsdp in ((1, 1), (8, 2)):
    workdir = str(tmp_path / f"d{devices}")
    # fsdp_min_size=1: even this tiny model's parameters and optimizer state get split.
    overrides = {"mesh.fsdp": fsdp, "mesh.fsdp_min_size": 1}
    result = helpers.run_cli(helpers.train_cmd("lut", workdir, **overrides), devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    runs[devices] = helpers.losses(workdir)
  assert runs[1].keys() == runs[8].keys() == {1, 2, 3, 4}
  for step in runs[1]:
    assert runs[8][step] == pytest.approx(runs[1][step], rel=1e-4)


def test_gradient_accumulation_gives_the_same_step(tmp_path):
  """Two micro-batches of 4 make the same loss and gradient as one batch of 8."""
  rows = {}
  for accum in (1, 2):
    workdir = str(tmp_path / str(accum))
    train.train(helpers.tiny_config("mae", total_steps=2, **{"optim.accum_steps": accum}), workdir)
    rows[accum] = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  for one, two in zip(rows[1], rows[2]):
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


def _wait_for_checkpoint(workdir, proc, step, timeout=240):
  # orbax renames a checkpoint's temporary directory to the bare step number once it is complete.
  complete = os.path.join(checkpoint.checkpoint_dir(workdir), str(step))
  deadline = time.time() + timeout
  while not os.path.isdir(complete):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.05)


KILL_RUN = {"total_steps": 150, "ckpt_every_steps": 5, "log_every_steps": 1}


@pytest.fixture(scope="module")
def uninterrupted_losses(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train.train(helpers.tiny_config("mae", **KILL_RUN), workdir)
  return helpers.losses(workdir)


def test_sigterm_saves_and_the_run_resumes_exactly(tmp_path, uninterrupted_losses):
  """SIGTERM (a preemption notice) saves and exits 0; SIGKILL is the kill script's below."""
  overrides = KILL_RUN
  workdir = str(tmp_path / "killed")
  proc = subprocess.Popen(helpers.train_cmd("mae", workdir, **overrides), env=helpers.cli_env(),
                          cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  _wait_for_checkpoint(workdir, proc, 5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  steps = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  assert steps and max(steps) < 150, "the run finished before it was stopped"
  assert proc.returncode == 0, err[-3000:]
  assert f"SIGTERM: saving step {max(steps)}" in out
  result = helpers.run_cli(helpers.train_cmd("mae", workdir, **overrides))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resuming from" in result.stdout
  assert helpers.losses(workdir) == uninterrupted_losses


def test_kill_resume_script_at_seeded_moments(tmp_path, uninterrupted_losses):
  """benchmarks/kill_resume.py with 2 kills (seed 4: one inside a save, one between saves)."""
  reference = tmp_path / "reference" / "metrics.jsonl"
  reference.parent.mkdir()
  reference.write_text("".join(json.dumps({"step": s, "loss": l}) + "\n"
                               for s, l in sorted(uninterrupted_losses.items())))
  script = os.path.join(helpers.ROOT, "benchmarks", "kill_resume.py")
  result = subprocess.run([sys.executable, script, "--n=2", "--seed=4", "--tiny",
                           f"--reference={reference}", f"--workdir={tmp_path / 'killed'}"],
                          env=helpers.cli_env(), cwd=helpers.ROOT, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert "2/2 resumed bit-exact" in result.stdout
  assert "kill 1: inside a save" in result.stdout and "kill 2: at step" in result.stdout


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
  workdir = str(tmp_path)
  train.train(helpers.tiny_config("mae", total_steps=2), workdir)
  before = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  bad = helpers.tiny_config("mae", total_steps=8, **{"optim.base_lr": 1e30})
  with pytest.raises(train.NonFiniteLossError, match="not finite at step"):
    train.train(bad, workdir)
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == before
  # The saved state still loads and is finite.
  from mimjax import state as state_lib
  _, step, state = state_lib.restore_state(workdir)
  assert step == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state["params"]))


def test_a_setup_failure_after_the_restore_closes_what_it_opened(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  train.train(helpers.tiny_config("mae", total_steps=2), workdir)
  closed = []
  real_close = checkpoint.Checkpointer.close
  monkeypatch.setattr(checkpoint.Checkpointer, "close",
                      lambda self: (closed.append(self.directory), real_close(self)))

  def broken_evaluators(*args, **kwargs):
    raise RuntimeError("evaluator dataset unreadable")

  monkeypatch.setattr(train.evals, "Evaluators", broken_evaluators)
  with pytest.raises(RuntimeError, match="evaluator dataset unreadable"):
    train.train(helpers.tiny_config("mae", total_steps=4), workdir)
  assert closed == [checkpoint.checkpoint_dir(workdir)]  # the resumed run's manager, once
  monkeypatch.undo()
  train.train(helpers.tiny_config("mae", total_steps=4), workdir)  # nothing left held: it resumes
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]


@pytest.mark.parametrize("flag,message,devices", [
    ("--config.model.mask_ratio=1.5", "config.model.mask_ratio", 1),
    ("--config.input.batch_size=6", "config.input.batch_size", 4),
    ("--config.model.variant=Z/16", "config.model.variant", 1),
    ("--config.modle.variant=B/16", 'Did you mean "model"', 1),
    ("--config.model.varient=B/16", 'Did you mean "variant"', 1),
    ("--config.input.dataset=no_such_dataset", "config.input", 1),
])
def test_cli_rejects_bad_config_with_one_message(flag, message, devices, tmp_path):
  cmd = helpers.train_cmd("mae", str(tmp_path)) + [flag]
  result = helpers.run_cli(cmd, devices=devices)
  assert result.returncode == 2
  assert message in result.stderr and "Traceback" not in result.stderr
  assert not os.path.exists(checkpoint.checkpoint_dir(str(tmp_path)))


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  workdir = str(tmp_path)
  procs = helpers.start_two_processes(
      helpers.cli_flags("mae", workdir, total_steps=400, ckpt_every_steps=5, log_every_steps=1))
  _wait_for_checkpoint(workdir, procs[0], 5)
  procs[1].send_signal(signal.SIGTERM)
  outs = [proc.communicate(timeout=300) for proc in procs]
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saving step" in out
  stopped = {out.split("SIGTERM: saving step ")[1].split()[0] for out, _ in outs}
  assert len(stopped) == 1  # both processes saved the same step
  steps = checkpoint.Checkpointer(workdir, read_only=True).all_steps()
  assert max(steps) == int(stopped.pop()) < 400
