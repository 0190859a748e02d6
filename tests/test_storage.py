"""gs:// workdirs against a local Cloud Storage emulator: train, kill, resume, export, load, outages."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mimjax
from mimjax import checkpoint
from mimjax import errors
from mimjax import sharding
from mimjax import step as step_lib
from mimjax import storage
from mimjax import train
from mimjax import workdir_layout
from mimjax import workdir_lock
from tests import helpers
from tests import gcs_emulator

BUCKET = f"gs://{gcs_emulator.BUCKET}"
STEPS = helpers.STEPS


def test_gs_run_killed_resumes_exactly_then_exports_and_loads(gcs, reference):
  workdir = f"{BUCKET}/killed"
  run = helpers.start(helpers.train_cmd("mae", workdir, **STEPS))
  helpers.read_until(run, "step 5/12")  # the save of step 4 has begun, so step 2's is complete
  run.send_signal(signal.SIGKILL)
  run.wait()
  assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() in (2, 4)

  resumed = helpers.run_cli(helpers.train_cmd("mae", workdir, **STEPS))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f"Resuming from {workdir}/checkpoints at step" in resumed.stdout
  assert helpers.losses(workdir) == helpers.losses(reference)  # one run's rows, equal to the local run's
  assert list(storage.path(f"{workdir}/tensorboard").glob("events.out.tfevents.*"))
  assert not storage.path(f"{workdir}/{workdir_layout.METRICS}").exists()  # chunks, not an append

  exported = helpers.run_cli([sys.executable, "-m", "mimjax.export.cli", f"--workdir={workdir}",
                         "--format=hf", f"--out={workdir}/export_hf"])
  assert exported.returncode == 0, exported.stderr
  from_gs = mimjax.load_pretrained(f"{workdir}/export_hf")
  local = mimjax.load_pretrained(reference)
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(from_gs.encode(images), local.encode(images), rtol=1e-5, atol=1e-5)


def test_profile_on_a_gs_workdir_is_copied_there(gcs, capsys):
  """The trace is written locally (TensorFlow's storage client cannot reach the emulator) and
  copied in; a run that ends inside the profile's window keeps the steps it traced."""
  workdir = f"{BUCKET}/profiled"
  train.train(helpers.tiny_config("mae", total_steps=3, **{"profile.start_step": 2,
                                                        "profile.num_steps": 10}), workdir)
  traces = list(storage.path(f"{workdir}/profile").glob("plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1
  assert helpers.traced_steps(traces[0]) == {2, 3}
  assert f"Profile of steps 2-3: {workdir}/profile" in capsys.readouterr().out


def test_storage_outage_during_saves_is_retried_through(gcs):
  workdir = f"{BUCKET}/outage"
  run = helpers.start(helpers.train_cmd("mae", workdir, total_steps=12, ckpt_every_steps=2))
  try:
    helpers.read_until(run, "step 5/12")  # the save of step 4 is in flight
    gcs.stop()
    time.sleep(3)
  finally:
    gcs.start()
  rest = run.communicate(timeout=240)[0]
  assert run.returncode == 0, rest
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [8, 10, 12]
  assert sorted(helpers.losses(workdir)) == list(range(1, 13))


def test_a_failed_save_stops_the_run_at_the_next_step_in_one_line(tmp_path):
  """A store that breaks its own reads: downloads without `x-goog-generation` (the emulator as it
  comes) fail tensorstore's OCDBT manifest reads, so the saves fail inside orbax's threads. The
  steps are paced to the saves (tests/save_failure_run.py), so a save ends within a step."""
  broken = gcs_emulator.Emulator(str(tmp_path / "gcs"), generation_header=False)
  broken.start()
  try:
    workdir = f"{BUCKET}/failing_saves"
    run = subprocess.run(
        [sys.executable, "-m", "tests.save_failure_run",
         *helpers.cli_flags("mae", workdir, total_steps=16, ckpt_every_steps=4)],
        env=dict(helpers.cli_env(), **broken.env()), cwd=helpers.ROOT, capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [l for l in run.stderr.splitlines() if l.startswith("mimjax-train: error:")]
    assert len(lines) == 1, run.stderr[-3000:]
    failed = int(re.search(r"saving checkpoint step (\d+) to \S+ failed", lines[0]).group(1))
    steps_run = [int(l.split()[1].split("/")[0]) for l in run.stdout.splitlines()
                 if l.startswith("step ")]
    assert failed <= max(steps_run) <= failed + 2  # the next step noticed, not the next save
    log = f"{workdir}/{workdir_layout.SAVE_ERRORS}/{failed}.log"
    assert f"the details are in {log}" in lines[0]
    read = ("import json; from mimjax import checkpoint, storage; print(json.dumps("
            f"[checkpoint.steps({workdir!r}), storage.path({log!r}).read_text()]))")
    looked = subprocess.run([sys.executable, "-c", read], env=dict(helpers.cli_env(), **broken.env()),
                            cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
    complete, details = json.loads(looked.stdout.splitlines()[-1])
    assert failed not in complete
    assert (f"step {max(complete)}, is intact" if complete else
            "no earlier checkpoint exists") in lines[0]
    assert "Traceback" in details
  finally:
    broken.stop()


def test_missing_bucket_is_refused_in_seconds(gcs):
  start = time.monotonic()
  with pytest.raises(storage.StorageError, match="bucket gs://no-such-bucket does not exist"):
    train.train(helpers.tiny_config("mae"), "gs://no-such-bucket/run")
  with pytest.raises(storage.StorageError, match="gs://no-such-bucket does not exist"):
    mimjax.load_pretrained("gs://no-such-bucket/export")
  assert time.monotonic() - start < 10


def test_storage_that_never_answers_is_one_line_and_the_command_exits_at_once():
  """The storage client retries a refused connection for half a minute, logging each failure;
  the command must not wait for it (nor print its tracebacks) after saying what is wrong."""
  env = dict(helpers.cli_env(), STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{helpers.free_port()}",
             GOOGLE_AUTH_TOKEN_FOR_TESTING="x")
  code = ("from mimjax import errors, storage; "
          "errors.exit_on_user_error('prog', storage.check_bucket, 'gs://b/run', seconds=1)")
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=helpers.ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2 and time.monotonic() - start < 20, out.stderr[-2000:]
  assert out.stderr == ("prog: error: checking gs://b: no answer from the storage service within "
                        "1 s: check the network and the credentials (gcloud auth "
                        "application-default login)\n")


def test_a_workdir_private_to_each_host_is_refused(tmp_path):
  """Two "hosts" whose workdir path names a different folder on each (a per-host /tmp)."""
  folders = [tmp_path / "host0", tmp_path / "host1"]
  for f in folders:
    f.mkdir()
  barrier = threading.Barrier(2)
  tokens = {}

  def broadcast(token):
    tokens.setdefault("first", token) if threading.current_thread().name == "p0" else None
    barrier.wait()
    return tokens["first"]

  errors = {}

  def process(index):
    try:
      storage.check_shared(folders[index], index, 2, broadcast, lambda name: barrier.wait())
    except storage.StorageError as e:
      errors[index] = str(e)

  threads = [threading.Thread(target=process, args=(i,), name=f"p{i}") for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  assert list(errors) == [1]
  assert "process 1 does not see the workdir" in errors[1] and "gs://" in errors[1]
  assert not list(folders[0].iterdir())  # the marker is cleaned up

  shared = tmp_path / "shared"
  shared.mkdir()
  results = []
  threads = [threading.Thread(target=lambda i=i: results.append(
      storage.check_shared(shared, i, 2, broadcast, lambda name: barrier.wait())), name=f"p{i}")
             for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  assert results == [None, None]


def test_storage_outage_at_resume_moves_nothing_and_says_so(gcs):
  """Storage that does not answer is not a damaged checkpoint: nothing is moved aside."""
  workdir = f"{BUCKET}/outage_resume"
  config = helpers.tiny_config("mae", total_steps=2, ckpt_every_steps=2)
  train.train(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  built = step_lib.build_step(config, sharding.make_mesh(1, 1), lambda s: 0.0, 2)
  abstract = checkpoint.abstract_with_shardings(built.abstract, built.shardings)
  gcs.stop()
  try:
    with pytest.raises(errors.StorageUnreachableError,
                       match=r"reading checkpoint .*/2 failed: the storage did not answer .* "
                             r"nothing was moved"):
      checkpoint.restore_newest_intact(ckpt, abstract)
  finally:
    gcs.start()
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2]
  assert not storage.path(workdir).joinpath(workdir_layout.DAMAGED_CHECKPOINTS).exists()


def test_a_live_run_on_a_gs_workdir_keeps_a_second_trainer_out(gcs):
  """The lock on gs:// keeps a live run's workdir to itself (that a killed run's lock does not
  block a restart is the kill/resume test above)."""
  workdir = f"{BUCKET}/locked"
  with workdir_lock.WorkdirLock(workdir):
    result = helpers.run_cli(helpers.train_cmd("mae", workdir))
    assert storage.path(workdir).joinpath(workdir_layout.LOCK).exists()
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert re.search(rf"mimjax-train: error: {workdir} is in use by another run \(host "
                   rf"{re.escape(socket.gethostname())}, pid {os.getpid()},", result.stderr)
  assert not storage.path(workdir).joinpath(workdir_layout.LOCK).exists()  # released
  assert not storage.path(workdir).joinpath(workdir_layout.CHECKPOINTS).exists()
